#pragma once

#include <napi.h>

namespace sigil {

// Registers the NfQueue class: one bound NFQUEUE queue whose packets are delivered to a JS callback
// on the event loop (a uv poll handle on the netlink socket) and answered with verdict().
void RegisterNfQueue(Napi::Env env, Napi::Object exports);

}  // namespace sigil
