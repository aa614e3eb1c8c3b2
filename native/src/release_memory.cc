// glibc keeps the memory free() returns inside its arenas: only a free stretch at the very top of the
// main arena is ever given back on its own. A burst of connections (TLS state, socket buffers) spread
// over the arena therefore stays resident after every one of them closed. malloc_trim(0) also
// releases the free pages in the middle of each arena (madvise), which is what brings the resident
// set of a sidecar back down after a burst.
#include "release_memory.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace sigil {
namespace {

Napi::Value ReleaseFreeMemory(const Napi::CallbackInfo& info) {
#if defined(__GLIBC__)
  malloc_trim(0);
  return Napi::Boolean::New(info.Env(), true);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

}  // namespace

void RegisterReleaseMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("releaseFreeMemory", Napi::Function::New(env, ReleaseFreeMemory));
}

}  // namespace sigil
