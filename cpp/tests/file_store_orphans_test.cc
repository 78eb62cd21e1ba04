// FileStore removes the temporaries of dead writers and never those of live ones.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "kvdump/stores/file_store.h"

namespace kvdump::testing {
namespace {

namespace fs = std::filesystem;

// A fresh root per test, removed afterwards.
class FileStoreOrphans : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const char* tmp = std::getenv("TMPDIR");
    root_ = std::string(tmp ? tmp : "/tmp") + "/kvdump-orphans-test-" + std::to_string(::getpid()) + "-" +
            std::to_string(counter++);
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }

  std::shared_ptr<FileStore> openStore(FileStoreOptions options = {}) {
    auto store = FileStore::open(root_, options);
    EXPECT_TRUE(store.ok()) << store.status().toString();
    return store.ok() ? store.value() : nullptr;
  }

  static FileStoreOptions noSweepOnOpen() {
    FileStoreOptions options;
    options.remove_orphans_on_open = false;
    return options;
  }

  // Creates a temporary named `name` in one fan-out directory, as a writer would have left it.
  std::string plant(const std::string& name) {
    const std::string dir = root_ + "/ab/cd";
    fs::create_directories(dir);
    const std::string path = dir + "/" + name;
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    EXPECT_GE(fd, 0) << path;
    if (fd >= 0) {
      EXPECT_EQ(::write(fd, "partial", 7), 7);
      ::close(fd);
    }
    return path;
  }

  size_t countTemporaries() const {
    size_t n = 0;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(root_, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      if (it->path().filename().string().rfind(".tmp", 0) == 0) ++n;
    }
    EXPECT_FALSE(ec) << ec.message();
    return n;
  }

  std::string root_;
};

bool pathExists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

void setAge(const std::string& path, int64_t seconds) {
  struct timespec now {};
  ::clock_gettime(CLOCK_REALTIME, &now);
  struct timespec times[2];
  times[0] = now;
  times[1] = now;
  times[1].tv_sec -= seconds;
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0) << path;
}

size_t sweep(FileStore& store) {
  auto removed = store.removeOrphanTemporaries();
  EXPECT_TRUE(removed.ok()) << removed.status().toString();
  return removed.ok() ? removed.value() : 0;
}

// Forks a child that names a temporary after itself and exits; returns its (reaped) PID.
pid_t deadChildPid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  EXPECT_GT(child, 0);
  int status = 0;
  EXPECT_EQ(::waitpid(child, &status, 0), child);
  return child;
}

// Without /proc this machine cannot probe PIDs, and every temporary follows the age rule.
bool canProbePids() {
  const TemporaryOwner self = FileStore::currentTemporaryOwner();
  return !self.node.empty() && self.start != 0;
}

TemporaryOwner foreignOwner() {
  TemporaryOwner owner;
  owner.host = "elsewhere";
  owner.node = "0123456789abcdef0123456789abcdef-4026531836";  // not this machine's boot id
  owner.pid = ::getpid();  // alive here, which must not matter: it is another node's PID
  owner.start = 1;
  return owner;
}

std::vector<uint8_t> pattern(size_t size, uint32_t seed) {
  std::vector<uint8_t> v(size);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<uint8_t>(x >> 24);
  }
  return v;
}

TEST_F(FileStoreOrphans, TemporaryOfDeadLocalWriterIsRemoved) {
  if (!canProbePids()) GTEST_SKIP() << "no /proc: PIDs cannot be probed here";
  auto store = openStore(noSweepOnOpen());
  ASSERT_TRUE(store);
  const std::string dir = root_ + "/ab/cd";
  fs::create_directories(dir);
  // The child names the file itself, so its real PID and start time (fork refreshes both) are recorded.
  const pid_t child = ::fork();
  if (child == 0) {
    const std::string path = dir + "/" + FileStore::temporaryName(FileStore::currentTemporaryOwner(), 0);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    ::_exit(fd >= 0 ? 0 : 1);
  }
  ASSERT_GT(child, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(countTemporaries(), 1u);
  EXPECT_EQ(sweep(*store), 1u);
  EXPECT_EQ(countTemporaries(), 0u);
}

TEST_F(FileStoreOrphans, TemporaryOfThisLiveProcessIsKept) {
  if (!canProbePids()) GTEST_SKIP() << "no /proc: PIDs cannot be probed here";
  auto store = openStore(noSweepOnOpen());
  ASSERT_TRUE(store);
  const std::string path = plant(FileStore::temporaryName(FileStore::currentTemporaryOwner(), 123456));
  setAge(path, 10 * 24 * 3600);  // age never matters for a writer that can be probed
  EXPECT_EQ(sweep(*store), 0u);
  EXPECT_TRUE(pathExists(path));
}

TEST_F(FileStoreOrphans, TemporaryOfReusedPidIsRemoved) {
  if (!canProbePids()) GTEST_SKIP() << "no /proc: PIDs cannot be probed here";
  TemporaryOwner owner = FileStore::currentTemporaryOwner();
  owner.start += 1;  // this PID, but a process that started at another time: that one is gone
  auto store = openStore(noSweepOnOpen());
  ASSERT_TRUE(store);
  const std::string path = plant(FileStore::temporaryName(owner, 0));
  EXPECT_EQ(sweep(*store), 1u);
  EXPECT_FALSE(pathExists(path));
}

TEST_F(FileStoreOrphans, TemporaryOfLiveOtherProcessIsKeptUntilItDies) {
  if (!canProbePids()) GTEST_SKIP() << "no /proc: PIDs cannot be probed here";
  auto store = openStore(noSweepOnOpen());
  ASSERT_TRUE(store);
  int to_child[2];
  int from_child[2];
  ASSERT_EQ(::pipe(to_child), 0);
  ASSERT_EQ(::pipe(from_child), 0);
  const std::string dir = root_ + "/ab/cd";
  fs::create_directories(dir);
  const pid_t child = ::fork();
  if (child == 0) {
    const std::string path = dir + "/" + FileStore::temporaryName(FileStore::currentTemporaryOwner(), 7);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    const char ready = fd >= 0 ? 'y' : 'n';
    (void)!::write(from_child[1], &ready, 1);
    char go;
    (void)!::read(to_child[0], &go, 1);  // stays alive, file open, until the parent says so
    ::_exit(0);
  }
  ASSERT_GT(child, 0);
  char ready = 0;
  ASSERT_EQ(::read(from_child[0], &ready, 1), 1);
  ASSERT_EQ(ready, 'y');
  ASSERT_EQ(countTemporaries(), 1u);
  EXPECT_EQ(sweep(*store), 0u);
  EXPECT_EQ(countTemporaries(), 1u);
  ASSERT_EQ(::write(to_child[1], "g", 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_EQ(sweep(*store), 1u);
  EXPECT_EQ(countTemporaries(), 0u);
  for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) ::close(fd);
}

TEST_F(FileStoreOrphans, ForeignTemporaryIsRemovedOnlyWhenOlderThanTheAge) {
  auto store = openStore(noSweepOnOpen());  // default stale_temp_age: one hour
  ASSERT_TRUE(store);
  const std::string young = plant(FileStore::temporaryName(foreignOwner(), 1));
  setAge(young, 3600 - 60);
  const std::string old = plant(FileStore::temporaryName(foreignOwner(), 2));
  setAge(old, 3600 + 60);
  EXPECT_EQ(sweep(*store), 1u);
  EXPECT_TRUE(pathExists(young));
  EXPECT_FALSE(pathExists(old));
}

TEST_F(FileStoreOrphans, StaleTempAgeIsAnOptionAndZeroNeverRemovesForeignTemporaries) {
  const std::string path = plant(FileStore::temporaryName(foreignOwner(), 1));
  setAge(path, 20);
  FileStoreOptions never = noSweepOnOpen();
  never.stale_temp_age = std::chrono::seconds(0);
  FileStore keeps(root_, never);
  EXPECT_EQ(sweep(keeps), 0u);
  EXPECT_TRUE(pathExists(path));
  FileStoreOptions short_age = noSweepOnOpen();
  short_age.stale_temp_age = std::chrono::seconds(10);
  FileStore removes(root_, short_age);
  EXPECT_EQ(sweep(removes), 1u);
  EXPECT_FALSE(pathExists(path));
}

TEST_F(FileStoreOrphans, OldFormatTemporaryFollowsTheAgeRuleEvenForALivePid) {
  auto store = openStore(noSweepOnOpen());
  ASSERT_TRUE(store);
  // The old naming recorded a PID but no host: this process's PID proves nothing about it.
  const std::string me = std::to_string(::getpid());
  const std::string young = plant(".tmp." + me + ".1234567890123456789.0");
  const std::string old = plant(".tmp." + me + ".1234567890123456789.1");
  setAge(old, 2 * 3600);
  EXPECT_EQ(sweep(*store), 1u);
  EXPECT_TRUE(pathExists(young));
  EXPECT_FALSE(pathExists(old));
}

TEST_F(FileStoreOrphans, ValuesAndOtherFilesAreNeverSwept) {
  auto store = openStore(noSweepOnOpen());
  ASSERT_TRUE(store);
  const std::vector<std::string> keys = {"ns/tp0of1/0123456789abcdef/L0", ".tmp.1.2", ".tmp", ".tmpx.1.2.3"};
  for (const auto& key : keys) {
    const auto value = pattern(100, 1);
    ASSERT_TRUE(store->put(key, {value.data(), value.size()}).ok()) << key;
  }
  const std::string stray = plant(".tmpfoo");
  for (const auto& entry : fs::recursive_directory_iterator(root_)) {
    if (entry.is_regular_file()) setAge(entry.path().string(), 30 * 24 * 3600);
  }
  EXPECT_EQ(sweep(*store), 0u);
  EXPECT_TRUE(pathExists(stray));
  for (const auto& key : keys) {
    auto got = store->get(key);
    ASSERT_TRUE(got.ok()) << key << ": " << got.status().toString();
    EXPECT_EQ(got.value(), pattern(100, 1));
  }
}

TEST_F(FileStoreOrphans, OpenSweepsUnlessTurnedOff) {
  if (!canProbePids()) GTEST_SKIP() << "no /proc: PIDs cannot be probed here";
  TemporaryOwner dead = FileStore::currentTemporaryOwner();
  dead.pid = deadChildPid();
  const std::string path = plant(FileStore::temporaryName(dead, 0));
  ASSERT_TRUE(openStore(noSweepOnOpen()));
  EXPECT_TRUE(pathExists(path));
  ASSERT_TRUE(openStore());
  EXPECT_FALSE(pathExists(path));
}

TEST_F(FileStoreOrphans, ConcurrentSweepersRemoveEachOrphanOnce) {
  if (!canProbePids()) GTEST_SKIP() << "no /proc: PIDs cannot be probed here";
  TemporaryOwner dead = FileStore::currentTemporaryOwner();
  dead.pid = deadChildPid();
  constexpr size_t kOrphans = 300;
  for (size_t i = 0; i < kOrphans; ++i) plant(FileStore::temporaryName(dead, i));
  FileStore a(root_, noSweepOnOpen());
  FileStore b(root_, noSweepOnOpen());
  size_t by_b = 0;
  std::thread other([&] { by_b = sweep(b); });
  const size_t by_a = sweep(a);
  other.join();
  EXPECT_EQ(by_a + by_b, kOrphans);
  EXPECT_EQ(countTemporaries(), 0u);
}

TEST_F(FileStoreOrphans, SweepNeverBreaksAnInFlightWriteOfAnotherThread) {
  auto store = openStore(noSweepOnOpen());
  ASSERT_TRUE(store);
  constexpr int kValues = 64;
  constexpr size_t kSize = 512 * 1024;
  std::atomic<bool> done{false};
  std::vector<Status> results(kValues);
  std::thread writer([&] {
    for (int i = 0; i < kValues; ++i) {
      const auto value = pattern(kSize, static_cast<uint32_t>(i));
      // Two puts of one key: the second replaces a published value while the sweeps run.
      results[i] = store->put("k/" + std::to_string(i % 8), {value.data(), value.size()});
      if (results[i].ok()) results[i] = store->put("v/" + std::to_string(i), {value.data(), value.size()});
    }
    done = true;
  });
  FileStore sweeper(root_, noSweepOnOpen());
  size_t sweeps = 0;
  size_t removed = 0;
  while (!done) {
    removed += sweep(sweeper);
    ++sweeps;
  }
  writer.join();
  EXPECT_EQ(removed, 0u) << "after " << sweeps << " sweeps";
  for (int i = 0; i < kValues; ++i) {
    ASSERT_TRUE(results[i].ok()) << i << ": " << results[i].toString();
    auto got = store->get("v/" + std::to_string(i));
    ASSERT_TRUE(got.ok()) << got.status().toString();
    EXPECT_TRUE(got.value() == pattern(kSize, static_cast<uint32_t>(i))) << "value " << i << " corrupted";
  }
  for (int k = 0; k < 8; ++k) {
    auto got = store->get("k/" + std::to_string(k));
    ASSERT_TRUE(got.ok());
    EXPECT_TRUE(got.value() == pattern(kSize, static_cast<uint32_t>(kValues - 8 + k)));
  }
  EXPECT_EQ(countTemporaries(), 0u);
}

TEST_F(FileStoreOrphans, SweepNeverBreaksAnInFlightWriteOfAnotherProcess) {
  ASSERT_TRUE(openStore(noSweepOnOpen()));
  constexpr int kValues = 48;
  constexpr size_t kSize = 512 * 1024;
  const pid_t child = ::fork();
  if (child == 0) {
    FileStore writer(root_, noSweepOnOpen());
    for (int i = 0; i < kValues; ++i) {
      const auto value = pattern(kSize, static_cast<uint32_t>(i));
      if (!writer.put("p/" + std::to_string(i), {value.data(), value.size()}).ok()) ::_exit(1);
    }
    ::_exit(0);
  }
  ASSERT_GT(child, 0);
  FileStore sweeper(root_, noSweepOnOpen());
  size_t removed = 0;
  int status = 0;
  pid_t reaped = 0;
  while ((reaped = ::waitpid(child, &status, WNOHANG)) == 0) removed += sweep(sweeper);
  ASSERT_EQ(reaped, child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "a put in the writer process failed";
  EXPECT_EQ(removed, 0u);
  for (int i = 0; i < kValues; ++i) {
    auto got = sweeper.get("p/" + std::to_string(i));
    ASSERT_TRUE(got.ok()) << got.status().toString();
    EXPECT_TRUE(got.value() == pattern(kSize, static_cast<uint32_t>(i))) << "value " << i << " corrupted";
  }
}

TEST_F(FileStoreOrphans, KilledWritersLeaveNoTemporaryOnceTheStoreIsReopened) {
  constexpr size_t kSize = 1 << 20;
  ASSERT_TRUE(openStore(noSweepOnOpen()));
  for (int round = 0; round < 5; ++round) {
    int from_child[2];
    ASSERT_EQ(::pipe(from_child), 0);
    const pid_t child = ::fork();
    if (child == 0) {
      FileStore writer(root_, noSweepOnOpen());
      const auto value = pattern(kSize, 42);
      for (uint64_t i = 0;; ++i) {
        if (!writer.put("w/" + std::to_string(round) + "/" + std::to_string(i), {value.data(), value.size()}).ok()) {
          ::_exit(1);
        }
        if (i == 0) (void)!::write(from_child[1], "y", 1);
      }
    }
    ASSERT_GT(child, 0);
    char ready = 0;
    ASSERT_EQ(::read(from_child[0], &ready, 1), 1);  // it has published at least one value
    ::usleep(1000 * static_cast<useconds_t>(round));
    ASSERT_EQ(::kill(child, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ::close(from_child[0]);
    ::close(from_child[1]);
  }
  auto store = openStore();
  ASSERT_TRUE(store);
  EXPECT_EQ(countTemporaries(), 0u);
  // Every value that was published is whole.
  size_t values = 0;
  for (const auto& entry : fs::recursive_directory_iterator(root_)) {
    if (!entry.is_regular_file()) continue;
    ++values;
    EXPECT_EQ(entry.file_size(), kSize) << entry.path();
  }
  EXPECT_GE(values, 5u);
}

}  // namespace
}  // namespace kvdump::testing
