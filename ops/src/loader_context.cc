#include "kvdump_ops/loader_context.h"

#include <string>

namespace kvdump {

Result<std::shared_ptr<LoaderContext>> LoaderContext::create(std::shared_ptr<CacheStore> store,
                                                             const EngineOptions& options) {
  std::shared_ptr<LoaderContext> context(new LoaderContext());
  context->board_ = std::make_shared<CompletionBoard>();
  auto engine = TransferEngine::create(std::make_shared<TransferTarget>(), std::move(store), options);
  if (!engine.ok()) return engine.status();
  context->engine_ = std::move(engine).value();
  return context;
}

LoaderContext::~LoaderContext() {
  if (engine_ && engine_->pool().forkedAway()) {
    // A forked child's copy: its board and store may hold locks of the parent's threads.
    (void)engine_.release();  // NOLINT: left to the process's end on purpose
    return;
  }
  engine_.reset();  // aborts within abort_timeout; a load left in an abandoned call keeps the target alive
  if (board_) board_->close("the loader was closed");
}

Status LoaderContext::queue(uint32_t layer, LoadTask load) {
  std::shared_ptr<TransferTarget> target = engine_->target();
  std::shared_ptr<CompletionBoard> board = board_;
  board->expect(layer);
  Status submitted = engine_->pool().submit(
      [target, board, layer, load = std::move(load)](TaskControl& control) {
        Status s = load(*target, control);
        // An abandoned load's waiters were told by abort(); a late outcome must not overwrite that.
        control.runIfLive([&] { board->complete(layer, s); });
        return s;
      },
      TaskLabel{std::string(), static_cast<int64_t>(layer), std::string(), "load"});
  if (!submitted.ok()) board->complete(layer, submitted);
  return submitted;
}

Status LoaderContext::abort(AbortReport* report, std::optional<std::chrono::nanoseconds> timeout) {
  Status status = engine_->pool().abort(report, timeout);
  board_->cancelPending("the load was cancelled by abort()");
  return status;
}

void LoaderContext::shutdown(std::optional<std::chrono::nanoseconds> timeout) {
  if (engine_->pool().forkedAway()) return;
  engine_->pool().close(timeout);
  board_->close("the loader was closed");
}

}  // namespace kvdump
