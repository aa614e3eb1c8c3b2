// Module entry: registers every native function. Context-aware, so worker threads may load it too.
#include <napi.h>

#include "original_dst.h"
#include "packet_napi.h"
#include "peer_cred.h"
#include "release_memory.h"
#include "thread_cpu.h"
#include "warm_handshake_napi.h"
#ifdef SIGIL_HAVE_NFQUEUE
#include "nfqueue.h"
#endif

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("getOriginalDestination", Napi::Function::New(env, sigil::GetOriginalDestination));
  sigil::RegisterPacketFunctions(env, exports);
  sigil::RegisterPeerCredentials(env, exports);
  sigil::RegisterThreadCpu(env, exports);
  sigil::RegisterReleaseMemory(env, exports);
  sigil::RegisterWarmHandshakes(env, exports);
#ifdef SIGIL_HAVE_NFQUEUE
  sigil::RegisterNfQueue(env, exports);
#endif
  exports.Set("hasNfQueue", Napi::Boolean::New(env,
#ifdef SIGIL_HAVE_NFQUEUE
                                               true
#else
                                               false
#endif
                                               ));
  return exports;
}

}  // namespace

NODE_API_MODULE(sigil_native, Init)
