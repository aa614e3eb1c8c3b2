// Module entry: registers every native function. Context-aware, so worker threads may load it too.
#include <napi.h>

#include "original_dst.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("getOriginalDestination", Napi::Function::New(env, sigil::GetOriginalDestination));
  return exports;
}

}  // namespace

NODE_API_MODULE(sigil_native, Init)
