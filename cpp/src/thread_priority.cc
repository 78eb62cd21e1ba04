#include "kvdump/thread_priority.h"

#include <cerrno>
#include <cstring>
#include <string>

#ifdef __linux__
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace kvdump {

Status lowerCurrentThreadPriority(int nice_increment) {
  if (nice_increment < 1 || nice_increment > 19) {
    return Status::InvalidArgument("nice increment must be in [1, 19], got " + std::to_string(nice_increment));
  }
#ifdef __linux__
  // On Linux, nice values and scheduling classes belong to threads; pid 0 is the calling thread.
  const pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
  sched_param param{};
  param.sched_priority = 0;
  if (sched_setscheduler(0, SCHED_BATCH, &param) != 0) {
    return Status::IoError(std::string("sched_setscheduler(SCHED_BATCH) failed: ") + std::strerror(errno));
  }
  errno = 0;
  const int current = getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
  if (current == -1 && errno != 0) return Status::IoError(std::string("getpriority failed: ") + std::strerror(errno));
  const int target = current + nice_increment > 19 ? 19 : current + nice_increment;
  if (setpriority(PRIO_PROCESS, static_cast<id_t>(tid), target) != 0) {
    return Status::IoError(std::string("setpriority failed: ") + std::strerror(errno));
  }
  return Status::Ok();
#else
  return Status::Unsupported("per-thread scheduling priority is only set on Linux");
#endif
}

}  // namespace kvdump
