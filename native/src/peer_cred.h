#pragma once

#include <napi.h>

namespace sigil {

// getPeerCredentials(fd) -> { pid, uid, gid } of the process that connected a Unix domain socket.
void RegisterPeerCredentials(Napi::Env env, Napi::Object exports);

}  // namespace sigil
