// One-shot tickets by which the torch side claims a context the Python side made. A pybind11 object
// cannot become a torch object without its bindings including libtorch, so the hand-over goes
// through a number: the Python object offers, the torch custom class claims, and no call ever looks
// the context up again.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace kvdump {

/// The contexts of type T offered and not yet claimed. Holds only weak references, so an offer never
/// keeps a context alive. Thread-safe.
template <typename T>
class TicketOffers {
 public:
  /// A ticket naming `context` until claimed.
  static int64_t offer(const std::shared_ptr<T>& context) {
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mu);
    // Offers never claimed (their Python object failed before claiming) are dropped once dead.
    for (auto it = s.pending.begin(); it != s.pending.end();) {
      it = it->second.expired() ? s.pending.erase(it) : std::next(it);
    }
    const int64_t ticket = s.next_ticket++;
    s.pending.emplace(ticket, context);
    return ticket;
  }

  /// The live context offered under `ticket`, which stops naming it; nullptr when the ticket was
  /// never issued, was already claimed, or its context is gone.
  static std::shared_ptr<T> claim(int64_t ticket) {
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.pending.find(ticket);
    if (it == s.pending.end()) return nullptr;
    std::shared_ptr<T> context = it->second.lock();
    s.pending.erase(it);
    return context;
  }

 private:
  struct State {
    std::mutex mu;
    std::unordered_map<int64_t, std::weak_ptr<T>> pending;
    int64_t next_ticket = 1;
  };

  static State& state() {
    // Leaked on purpose: contexts may be destroyed during static destruction at interpreter exit.
    static State* s = new State();
    return *s;
  }
};

}  // namespace kvdump
