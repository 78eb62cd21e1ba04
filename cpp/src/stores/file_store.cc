#include "kvdump/stores/file_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

namespace kvdump {
namespace {

Status errnoStatus(const std::string& what, int err, std::string_view key) {
  std::string message = what + ": " + std::strerror(err);
  Status s = (err == ENOSPC || err == EDQUOT) ? Status::StoreFull(message) : Status::IoError(message);
  return std::move(s).withKey(std::string(key));
}

// Percent-encodes everything but [A-Za-z0-9._-], so any key (slashes included) is one safe file name.
std::string escapeKey(std::string_view key) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  out.reserve(key.size() + 8);
  // "." and ".." name directories, not files: their dots are escaped.
  const bool dots_only = key == "." || key == "..";
  for (unsigned char c : key) {
    if (std::isalnum(c) || (c == '.' && !dots_only) || c == '_' || c == '-') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

Status makeDirs(const std::string& path) {
  std::string partial;
  for (size_t pos = 0; pos != std::string::npos;) {
    pos = path.find('/', pos + 1);
    partial = path.substr(0, pos);
    if (partial.empty()) continue;
    if (::mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST) return errnoStatus("mkdir " + partial, errno, "");
  }
  return Status::Ok();
}

Status writeAll(int fd, const uint8_t* data, size_t size, std::string_view key) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errnoStatus("write", errno, key);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

// ---- Temporaries and their owners ------------------------------------------------------------------

// Names are ".tmp~<host>~<node>~<pid>~<start>~<serial>". '~' never appears in an escaped key, so a
// value file can never look like a temporary, nor the reverse.
constexpr char kTempPrefix[] = ".tmp~";
constexpr char kTempSeparator = '~';

// Keeps a name field free of the separator and of anything a file name should not hold.
std::string sanitizeField(std::string_view in, size_t max_size) {
  std::string out;
  for (unsigned char c : in.substr(0, max_size)) {
    out.push_back(std::isalnum(c) || c == '.' || c == '_' || c == '-' ? static_cast<char>(c) : '_');
  }
  return out.empty() ? "-" : out;
}

// Reads up to `limit` bytes of a small /proc file; nullopt if it cannot be read.
std::optional<std::string> readSmallFile(const std::string& path, size_t limit) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out(limit, '\0');
  size_t done = 0;
  while (done < limit) {
    const ssize_t n = ::read(fd, &out[done], limit - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(done);
  return out;
}

std::optional<uint64_t> parseDecimal(std::string_view text) {
  if (text.empty() || text.size() > 20) return std::nullopt;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    const auto digit = static_cast<uint64_t>(c - '0');
    if (value > (UINT64_MAX - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
  }
  return value;
}

// Field 22 of /proc/<pid>/stat (start time in clock ticks after boot). The command name (field 2) may
// hold spaces and parentheses, so fields are counted from the last ')'.
std::optional<uint64_t> processStartTime(const std::string& pid_dir) {
  auto stat = readSmallFile(pid_dir + "/stat", 1024);
  if (!stat) return std::nullopt;
  const size_t close = stat->rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::string_view rest = std::string_view(*stat).substr(close + 1);
  int field = 2;
  while (!rest.empty()) {
    const size_t begin = rest.find_first_not_of(' ');
    if (begin == std::string_view::npos) break;
    rest.remove_prefix(begin);
    const size_t end = std::min(rest.find(' '), rest.size());
    if (++field == 22) return parseDecimal(rest.substr(0, end));
    rest.remove_prefix(end);
  }
  return std::nullopt;
}

// PIDs are comparable only within one kernel boot and one PID namespace; "" when either is unknown.
std::string currentNode() {
  auto boot = readSmallFile("/proc/sys/kernel/random/boot_id", 128);
  if (!boot) return "";
  std::string boot_hex;
  for (char c : *boot) {
    if (std::isxdigit(static_cast<unsigned char>(c))) boot_hex.push_back(static_cast<char>(std::tolower(c)));
  }
  if (boot_hex.size() != 32) return "";
  char link[64] = {};
  const ssize_t n = ::readlink("/proc/self/ns/pid", link, sizeof(link) - 1);
  if (n <= 0) return "";
  const std::string_view ns(link, static_cast<size_t>(n));  // "pid:[4026531836]"
  const size_t open = ns.find('[');
  const size_t close = ns.find(']');
  if (open == std::string_view::npos || close == std::string_view::npos || close <= open + 1) return "";
  const std::string_view inode = ns.substr(open + 1, close - open - 1);
  if (!parseDecimal(inode)) return "";
  return boot_hex + "-" + std::string(inode);
}

std::string currentHost() {
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0) return "-";
  return sanitizeField(host, 64);
}

// Process-wide, so that two FileStores of one process never pick the same name either.
std::atomic<uint64_t> g_temp_serial{0};

// After fork() the child has a new PID and start time; the cache notices through the PID.
std::atomic<int64_t> g_cached_pid{0};
std::atomic<uint64_t> g_cached_start{0};

std::optional<TemporaryOwner> parseTemporaryName(std::string_view name) {
  const size_t prefix = sizeof(kTempPrefix) - 1;
  if (name.substr(0, prefix) != kTempPrefix) return std::nullopt;
  name.remove_prefix(prefix);
  std::vector<std::string_view> fields;
  while (true) {
    const size_t sep = name.find(kTempSeparator);
    fields.push_back(name.substr(0, sep));
    if (sep == std::string_view::npos) break;
    name.remove_prefix(sep + 1);
  }
  if (fields.size() != 5) return std::nullopt;
  auto pid = parseDecimal(fields[2]);
  auto start = parseDecimal(fields[3]);
  if (!pid || *pid == 0 || *pid > static_cast<uint64_t>(INT32_MAX) || !start || !parseDecimal(fields[4])) {
    return std::nullopt;
  }
  TemporaryOwner owner;
  owner.host = fields[0] == "-" ? "" : std::string(fields[0]);
  owner.node = fields[1] == "-" ? "" : std::string(fields[1]);
  owner.pid = static_cast<int64_t>(*pid);
  owner.start = *start;
  return owner;
}

// The naming before writers were recorded: ".tmp.<pid>.<thread hash>.<counter>", all decimal.
bool isOldTemporaryName(std::string_view name) {
  constexpr std::string_view prefix = ".tmp.";
  if (name.substr(0, prefix.size()) != prefix) return false;
  name.remove_prefix(prefix.size());
  for (int i = 0; i < 3; ++i) {
    const size_t dot = name.find('.');
    if (!parseDecimal(name.substr(0, dot))) return false;
    if ((dot == std::string_view::npos) != (i == 2)) return false;
    if (dot != std::string_view::npos) name.remove_prefix(dot + 1);
  }
  return true;
}

enum class Liveness { kAlive, kDead, kUnknown };

// Only meaningful for a writer on this node. A process that exists but whose start time differs is a
// later process that reused the PID, so the writer is dead all the same.
Liveness probeLocalWriter(const TemporaryOwner& owner) {
  const auto pid = static_cast<pid_t>(owner.pid);
  if (::kill(pid, 0) != 0) {
    if (errno == ESRCH) return Liveness::kDead;
    if (errno != EPERM) return Liveness::kUnknown;  // EPERM: it exists, owned by someone else
  }
  if (owner.start == 0) return Liveness::kUnknown;
  auto start = processStartTime("/proc/" + std::to_string(pid));
  if (!start) {
    // It may have exited between kill() and the read; ask again rather than guess.
    return (::kill(pid, 0) != 0 && errno == ESRCH) ? Liveness::kDead : Liveness::kUnknown;
  }
  return *start == owner.start ? Liveness::kAlive : Liveness::kDead;
}

bool isTwoHex(const char* name) {
  return std::isxdigit(static_cast<unsigned char>(name[0])) && std::isxdigit(static_cast<unsigned char>(name[1])) &&
         name[2] == '\0';
}

}  // namespace

TemporaryOwner FileStore::currentTemporaryOwner() {
  static const std::string host = currentHost();
  static const std::string node = currentNode();
  TemporaryOwner owner;
  owner.host = host;
  owner.node = node;
  owner.pid = ::getpid();
  if (g_cached_pid.load(std::memory_order_acquire) == owner.pid) {
    owner.start = g_cached_start.load(std::memory_order_relaxed);
  } else {
    owner.start = processStartTime("/proc/self").value_or(0);
    g_cached_start.store(owner.start, std::memory_order_relaxed);
    g_cached_pid.store(owner.pid, std::memory_order_release);
  }
  return owner;
}

std::string FileStore::temporaryName(const TemporaryOwner& owner, uint64_t serial) {
  std::string name = kTempPrefix;
  name += sanitizeField(owner.host, 64);
  name += kTempSeparator;
  name += sanitizeField(owner.node, 64);
  name += kTempSeparator;
  name += std::to_string(owner.pid);
  name += kTempSeparator;
  name += std::to_string(owner.start);
  name += kTempSeparator;
  name += std::to_string(serial);
  return name;
}

Result<size_t> FileStore::removeOrphanTemporaries() {
  const TemporaryOwner self = currentTemporaryOwner();
  struct timespec now {};
  ::clock_gettime(CLOCK_REALTIME, &now);
  const int64_t max_age = options_.stale_temp_age.count();
  size_t removed = 0;
  Status first_error;
  auto note = [&](Status s) {
    if (first_error.ok()) first_error = std::move(s);
  };
  auto removeIfOrphan = [&](int dfd, const std::string& dir, const char* name) {
    bool orphan = false;
    auto owner = parseTemporaryName(name);
    if (owner && !self.node.empty() && owner->node == self.node) {
      orphan = probeLocalWriter(*owner) == Liveness::kDead;
    } else if ((owner || isOldTemporaryName(name)) && max_age > 0) {
      // Nothing tells a foreign writer's file from an orphan but its age.
      struct stat st {};
      if (::fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno != ENOENT) note(errnoStatus("stat " + dir + "/" + name, errno, ""));
        return;
      }
      const int64_t age = static_cast<int64_t>(now.tv_sec) - static_cast<int64_t>(st.st_mtim.tv_sec);
      orphan = S_ISREG(st.st_mode) && (age > max_age || (age == max_age && now.tv_nsec > st.st_mtim.tv_nsec));
    }
    if (!orphan) return;
    if (::unlinkat(dfd, name, 0) == 0) {
      ++removed;
    } else if (errno != ENOENT) {  // ENOENT: its writer renamed it or another sweeper got there first
      note(errnoStatus("unlink " + dir + "/" + name, errno, ""));
    }
  };
  // Visits the entries of `path` whose name passes `wanted`; a directory that vanished is empty.
  auto forEach = [&](const std::string& path, bool (*wanted)(const char*), auto&& visit) {
    DIR* d = ::opendir(path.c_str());
    if (d == nullptr) {
      if (errno != ENOENT && errno != ENOTDIR) note(errnoStatus("opendir " + path, errno, ""));
      return;
    }
    while (true) {
      errno = 0;
      const dirent* e = ::readdir(d);
      if (e == nullptr) {
        if (errno != 0) note(errnoStatus("readdir " + path, errno, ""));
        break;
      }
      if (wanted(e->d_name)) visit(::dirfd(d), e->d_name);
    }
    ::closedir(d);
  };
  auto isTemporaryCandidate = [](const char* name) { return std::strncmp(name, ".tmp", 4) == 0; };
  // A missing or unreadable root is an error, unlike a fan-out directory that vanishes meanwhile.
  DIR* probe = ::opendir(root_.c_str());
  if (probe == nullptr) return errnoStatus("opendir " + root_, errno, "");
  ::closedir(probe);
  forEach(root_, isTwoHex, [&](int, const char* first) {
    const std::string level1 = root_ + "/" + first;
    forEach(level1, isTwoHex, [&](int, const char* second) {
      const std::string level2 = level1 + "/" + second;
      forEach(level2, isTemporaryCandidate, [&](int dfd, const char* name) { removeIfOrphan(dfd, level2, name); });
    });
  });
  if (!first_error.ok()) return first_error;
  return removed;
}

Result<std::shared_ptr<FileStore>> FileStore::open(const std::string& root, FileStoreOptions options) {
  if (root.empty()) return Status::InvalidArgument("FileStore root must not be empty");
  if (root.find('\0') != std::string::npos) {
    return Status::InvalidArgument("FileStore root must not contain a NUL character");
  }
  std::string clean = root;
  while (clean.size() > 1 && clean.back() == '/') clean.pop_back();
  Status made = makeDirs(clean);
  if (!made.ok()) return made;
  struct stat st {};
  if (::stat(clean.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::IoError("FileStore root '" + clean + "' is not a directory");
  }
  auto store = std::make_shared<FileStore>(clean, options);
  // Best effort: leftovers cost only space, so they must not keep a working root from opening.
  if (options.remove_orphans_on_open) (void)store->removeOrphanTemporaries();
  return store;
}

Result<std::string> FileStore::pathFor(std::string_view key) const {
  if (key.empty()) return Status::InvalidArgument("empty key");
  const std::string name = escapeKey(key);
  if (name.size() > 240) return Status::InvalidArgument("key too long for a file name").withKey(std::string(key));
  const size_t h = std::hash<std::string_view>{}(key);
  char fan[8];
  std::snprintf(fan, sizeof(fan), "%02x/%02x", static_cast<unsigned>(h & 0xff), static_cast<unsigned>((h >> 8) & 0xff));
  return root_ + "/" + fan + "/" + name;
}

Status FileStore::put(std::string_view key, ByteView value) {
  auto path = pathFor(key);
  if (!path.ok()) return path.status();
  const std::string& final_path = path.value();
  const std::string dir = final_path.substr(0, final_path.rfind('/'));
  Status made = makeDirs(dir);
  if (!made.ok()) return std::move(made).withKey(std::string(key));
  // Unique per node, process and call, and names its writer so a sweep can tell whether it still runs.
  const std::string temp =
      dir + "/" + temporaryName(currentTemporaryOwner(), g_temp_serial.fetch_add(1, std::memory_order_relaxed));
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return errnoStatus("create " + temp, errno, key);
  Status written = writeAll(fd, value.data, value.size, key);
  if (written.ok() && options_.fsync && ::fsync(fd) != 0) written = errnoStatus("fsync", errno, key);
  if (::close(fd) != 0 && written.ok()) written = errnoStatus("close", errno, key);
  if (written.ok() && ::rename(temp.c_str(), final_path.c_str()) != 0) written = errnoStatus("rename", errno, key);
  if (!written.ok()) {
    ::unlink(temp.c_str());
    return written;
  }
  if (options_.fsync) {
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }
  return Status::Ok();
}

namespace {

// An open file and its size; closes the descriptor when it goes out of scope.
class ReadableFile {
 public:
  ReadableFile(int fd, size_t size) : fd_(fd), size_(size) {}
  ReadableFile(ReadableFile&& other) noexcept : fd_(std::exchange(other.fd_, -1)), size_(other.size_) {}
  ReadableFile(const ReadableFile&) = delete;
  ReadableFile& operator=(const ReadableFile&) = delete;
  ReadableFile& operator=(ReadableFile&&) = delete;
  ~ReadableFile() {
    if (fd_ >= 0) ::close(fd_);
  }

  size_t size() const { return size_; }

  /// Reads the whole file into `dst`, which holds at least size() bytes.
  Status readAll(uint8_t* dst, std::string_view key) const {
    size_t done = 0;
    while (done < size_) {
      const ssize_t n = ::read(fd_, dst + done, size_ - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return errnoStatus("read", n < 0 ? errno : EIO, key);
      done += static_cast<size_t>(n);
    }
    return Status::Ok();
  }

 private:
  int fd_;
  size_t size_;
};

Result<ReadableFile> openForRead(const std::string& path, std::string_view key) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound("no such key").withKey(std::string(key));
    return errnoStatus("open", errno, key);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return errnoStatus("fstat", err, key);
  }
  return ReadableFile(fd, static_cast<size_t>(st.st_size));
}

}  // namespace

Result<std::vector<uint8_t>> FileStore::get(std::string_view key) {
  auto path = pathFor(key);
  if (!path.ok()) return path.status();
  auto file = openForRead(path.value(), key);
  if (!file.ok()) return file.status();
  std::vector<uint8_t> out(file.value().size());
  Status read = file.value().readAll(out.data(), key);
  if (!read.ok()) return read;
  return out;
}

Result<size_t> FileStore::getInto(std::string_view key, MutableByteView dst) {
  auto path = pathFor(key);
  if (!path.ok()) return path.status();
  auto file = openForRead(path.value(), key);
  if (!file.ok()) return file.status();
  const size_t size = file.value().size();
  if (size > dst.size) return bufferTooSmall(key, size, dst.size);
  Status read = file.value().readAll(dst.data, key);
  if (!read.ok()) return read;
  return size;
}

Result<bool> FileStore::exists(std::string_view key) {
  auto path = pathFor(key);
  if (!path.ok()) return path.status();
  struct stat st {};
  if (::stat(path.value().c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    return errnoStatus("stat", errno, key);
  }
  return S_ISREG(st.st_mode);
}

Status FileStore::remove(std::string_view key) {
  auto path = pathFor(key);
  if (!path.ok()) return path.status();
  if (::unlink(path.value().c_str()) != 0) {
    if (errno == ENOENT) return Status::NotFound("no such key").withKey(std::string(key));
    return errnoStatus("unlink", errno, key);
  }
  return Status::Ok();
}

}  // namespace kvdump
