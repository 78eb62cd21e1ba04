#include "kvdump/completion_board.h"

#include <utility>

namespace kvdump {

// Outcomes replaced here are destroyed after the lock is released: a status may carry a Python
// object whose release takes the GIL, which a thread waiting for this lock may hold.
void CompletionBoard::expect(int64_t id) {
  Entry replaced;
  std::lock_guard<std::mutex> lock(mu_);
  replaced = std::exchange(entries_[id], Entry{});
}

void CompletionBoard::complete(int64_t id, Status status) {
  Entry replaced;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    replaced = std::exchange(entries_[id], Entry{true, std::move(status)});
  }
  cv_.notify_all();
}

Status CompletionBoard::wait(int64_t id, std::optional<std::chrono::nanoseconds> timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (closed_) return Status::Lifecycle(*closed_);
  if (entries_.find(id) == entries_.end()) return Status::NotFound("nothing was started for id " + std::to_string(id));
  // Looked up afresh after every wake-up: expect() may replace the entry meanwhile.
  auto done = [&] {
    if (closed_) return true;
    auto it = entries_.find(id);
    return it == entries_.end() || it->second.done;
  };
  if (timeout) {
    if (!cv_.wait_for(lock, *timeout, done)) return Status::Timeout("id " + std::to_string(id) + " not done in time");
  } else {
    cv_.wait(lock, done);
  }
  if (closed_) return Status::Lifecycle(*closed_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return Status::Cancelled("id " + std::to_string(id) + " was forgotten while waited for");
  return it->second.status;
}

bool CompletionBoard::expected(int64_t id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.find(id) != entries_.end();
}

void CompletionBoard::close(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!closed_) closed_ = why;
  }
  cv_.notify_all();
}

void CompletionBoard::cancelPending(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, entry] : entries_) {
      if (!entry.done) entry = Entry{true, Status::Cancelled(why)};
    }
  }
  cv_.notify_all();
}

}  // namespace kvdump
