#pragma once

#include <napi.h>

namespace sigil {

// getOriginalDestination(fd, family) -> { address, port }
Napi::Value GetOriginalDestination(const Napi::CallbackInfo& info);

}  // namespace sigil
