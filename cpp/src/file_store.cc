#include "kvdump/file_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <thread>
#include <utility>

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
  for (unsigned char c : key) {
    if (std::isalnum(c) || c == '.' || c == '_' || c == '-') {
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

}  // namespace

Result<std::shared_ptr<FileStore>> FileStore::open(const std::string& root, FileStoreOptions options) {
  if (root.empty()) return Status::InvalidArgument("FileStore root must not be empty");
  std::string clean = root;
  while (clean.size() > 1 && clean.back() == '/') clean.pop_back();
  Status made = makeDirs(clean);
  if (!made.ok()) return made;
  struct stat st {};
  if (::stat(clean.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::IoError("FileStore root '" + clean + "' is not a directory");
  }
  return std::make_shared<FileStore>(clean, options);
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
  // Unique per process, thread and call, so concurrent writers of one key never share a temp file.
  const std::string temp = dir + "/.tmp." + std::to_string(::getpid()) + "." +
                           std::to_string(std::hash<std::thread::id>{}(std::this_thread::get_id())) + "." +
                           std::to_string(temp_counter_.fetch_add(1));
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
