// Shared helper: turn a failed system call into a JS Error that carries the errno name, so the
// TypeScript layer can map it to a typed exception with a meaning a reader can act on.
#pragma once

#include <napi.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace sigil {

inline Napi::Error SyscallError(Napi::Env env, const char* syscall, int err, const std::string& context) {
  const char* name = strerrorname_np(err);
  std::string message = std::string(syscall) + " failed: " + (name ? name : "E?") + " (" + std::strerror(err) + ")";
  if (!context.empty()) message += ": " + context;
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, name ? name : "EUNKNOWN"));
  error.Set("errno", Napi::Number::New(env, err));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

}  // namespace sigil
