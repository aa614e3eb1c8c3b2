#pragma once

#include <napi.h>

#include "warm_handshake.h"

namespace sigil {

// Registers the WarmHandshakes class: the JS face of warm_handshake.h, through which the enforcer
// teaches the native table, shares per-connection state with it and collects its flow events.
void RegisterWarmHandshakes(Napi::Env env, Napi::Object exports);

// The table behind a WarmHandshakes object; throws a TypeError for anything else.
WarmHandshakes& UnwrapWarmHandshakes(const Napi::Value& value);

// Milliseconds since the epoch, the clock token timestamps use.
int64_t WallClockMs();

}  // namespace sigil
