// The calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID). Node's process.cpuUsage() sums every
// thread of the process; the fast path's workers account for their own packets with this.
#include "thread_cpu.h"

#include <time.h>

#include <cerrno>

#include "errors.h"

namespace sigil {
namespace {

Napi::Value ThreadCpuMicros(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  timespec ts{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) throw SyscallError(env, "clock_gettime", errno, "CLOCK_THREAD_CPUTIME_ID");
  return Napi::Number::New(env, static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3);
}

}  // namespace

void RegisterThreadCpu(Napi::Env env, Napi::Object exports) {
  exports.Set("threadCpuMicros", Napi::Function::New(env, ThreadCpuMicros));
}

}  // namespace sigil
