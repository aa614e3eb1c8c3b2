#pragma once

#include <napi.h>

namespace sigil {

// releaseFreeMemory(): hands the C heap's free pages back to the kernel (glibc malloc_trim); false
// where the C library has no such call.
void RegisterReleaseMemory(Napi::Env env, Napi::Object exports);

}  // namespace sigil
