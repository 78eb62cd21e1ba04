// Workers yield the cores to the forward: each lowers its own scheduling priority when it starts,
// unless told not to, and the caller's thread is never touched.
#include <gtest/gtest.h>

#ifdef __linux__
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "kvdump/async_writer.h"
#include "kvdump/thread_priority.h"

namespace kvdump {
namespace {

#ifdef __linux__
struct Priority {
  int policy = -1;
  int nice = 0;
};

Priority ofThisThread() {
  const auto tid = static_cast<id_t>(syscall(SYS_gettid));
  return {sched_getscheduler(0), getpriority(PRIO_PROCESS, tid)};
}

Priority ofAWorker(int worker_nice) {
  WriterOptions options;
  options.num_threads = 1;
  options.worker_nice = worker_nice;
  AsyncWriter w(options);
  Priority seen;
  EXPECT_TRUE(w.init().ok());
  EXPECT_TRUE(w.submit([&] {
                 seen = ofThisThread();
                 return Status::Ok();
               }, {"probe", 0, ""})
                  .ok());
  EXPECT_TRUE(w.waitAllDone().ok());
  return seen;
}

TEST(WriterPriority, WorkersRunInTheBatchClassAtAHigherNiceValue) {
  const Priority caller = ofThisThread();
  const Priority worker = ofAWorker(5);
  EXPECT_EQ(worker.policy, SCHED_BATCH);
  EXPECT_EQ(worker.nice, std::min(caller.nice + 5, 19));
  const Priority after = ofThisThread();  // the caller's own thread is untouched
  EXPECT_EQ(after.policy, caller.policy);
  EXPECT_EQ(after.nice, caller.nice);
}

TEST(WriterPriority, ZeroLeavesWorkersAtTheCallersPriority) {
  const Priority caller = ofThisThread();
  const Priority worker = ofAWorker(0);
  EXPECT_EQ(worker.policy, caller.policy);
  EXPECT_EQ(worker.nice, caller.nice);
}
#endif

TEST(WriterPriority, OutOfRangeValuesAreRefusedByName) {
  WriterOptions options;
  options.worker_nice = 20;
  Status s = validateWriterOptions(options);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("worker_nice"), std::string::npos);
  options.worker_nice = -1;
  EXPECT_EQ(validateWriterOptions(options).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(lowerCurrentThreadPriority(0).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvdump
