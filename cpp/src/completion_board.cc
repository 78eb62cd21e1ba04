#include "kvdump/completion_board.h"

namespace kvdump {

void CompletionBoard::expect(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_[id] = Entry{};
}

void CompletionBoard::complete(int64_t id, Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    entries_[id] = Entry{true, std::move(status)};
  }
  cv_.notify_all();
}

Status CompletionBoard::wait(int64_t id, std::optional<std::chrono::nanoseconds> timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return Status::NotFound("nothing was started for id " + std::to_string(id));
  auto done = [&] { return entries_[id].done; };
  if (timeout) {
    if (!cv_.wait_for(lock, *timeout, done)) return Status::Timeout("id " + std::to_string(id) + " not done in time");
  } else {
    cv_.wait(lock, done);
  }
  return entries_[id].status;
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
