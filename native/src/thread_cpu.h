#pragma once

#include <napi.h>

namespace sigil {

// threadCpuMicros(): CPU time (user + system) the calling thread has used, in microseconds.
void RegisterThreadCpu(Napi::Env env, Napi::Object exports);

}  // namespace sigil
