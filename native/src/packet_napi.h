#pragma once

#include <napi.h>

namespace sigil {

// JS bindings of tcp_packet.h: parseTcp, insertToken, extractToken, rewriteAsReset.
void RegisterPacketFunctions(Napi::Env env, Napi::Object exports);

}  // namespace sigil
