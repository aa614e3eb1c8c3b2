// Who is on the other end of a connected Unix domain socket: SO_PEERCRED hands back the pid, uid
// and gid the kernel recorded when the peer called connect() (or socketpair()), so a server can
// attest its caller without the caller presenting anything. Node exposes no way to read it.
#include "peer_cred.h"

#include <sys/socket.h>
#include <sys/types.h>

#include <cerrno>
#include <string>

#include "errors.h"

namespace sigil {
namespace {

Napi::Value GetPeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsNumber()) {
    throw Napi::TypeError::New(env, "getPeerCredentials(fd: number)");
  }
  const int fd = info[0].As<Napi::Number>().Int32Value();
  if (fd < 0) throw Napi::RangeError::New(env, "fd must be a non-negative file descriptor");

  // On other sockets the kernel answers SO_PEERCRED with no process (pid 0, uid and gid -1) rather
  // than an error: refuse them here so no caller can mistake that for an identity.
  int domain = 0;
  socklen_t domain_len = sizeof(domain);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &domain_len) != 0) {
    throw SyscallError(env, "getsockopt", errno, "SO_DOMAIN on fd " + std::to_string(fd));
  }
  if (domain != AF_UNIX) {
    throw SyscallError(env, "getsockopt", ENOPROTOOPT, "fd " + std::to_string(fd) + " is not a Unix domain socket");
  }

  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    throw SyscallError(env, "getsockopt", errno, "SO_PEERCRED on fd " + std::to_string(fd));
  }
  if (len != sizeof(cred)) {
    throw SyscallError(env, "getsockopt", EINVAL, "SO_PEERCRED returned a short ucred on fd " + std::to_string(fd));
  }
  if (cred.pid <= 0) {
    throw SyscallError(env, "getsockopt", ENOTCONN, "SO_PEERCRED names no process on fd " + std::to_string(fd));
  }

  Napi::Object result = Napi::Object::New(env);
  result.Set("pid", Napi::Number::New(env, cred.pid));
  result.Set("uid", Napi::Number::New(env, cred.uid));
  result.Set("gid", Napi::Number::New(env, cred.gid));
  return result;
}

}  // namespace

void RegisterPeerCredentials(Napi::Env env, Napi::Object exports) {
  exports.Set("getPeerCredentials", Napi::Function::New(env, GetPeerCredentials));
}

}  // namespace sigil
