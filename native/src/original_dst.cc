// Original destination of a connection redirected by iptables (nat REDIRECT/DNAT): the kernel keeps
// it in the conntrack entry and exposes it through SO_ORIGINAL_DST (IPv4) and IP6T_SO_ORIGINAL_DST
// (IPv6) on the accepted socket.
#include "original_dst.h"

#include <arpa/inet.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <string>

#include "errors.h"

namespace sigil {

Napi::Value GetOriginalDestination(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    throw Napi::TypeError::New(env, "getOriginalDestination(fd: number, family: 4 | 6)");
  }
  const int fd = info[0].As<Napi::Number>().Int32Value();
  const int family = info[1].As<Napi::Number>().Int32Value();
  if (fd < 0) throw Napi::RangeError::New(env, "fd must be a non-negative file descriptor");

  char text[INET6_ADDRSTRLEN] = {0};
  uint16_t port = 0;
  if (family == 4) {
    sockaddr_in addr{};
    socklen_t len = sizeof(addr);
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &addr, &len) != 0) {
      throw SyscallError(env, "getsockopt", errno, "SO_ORIGINAL_DST on fd " + std::to_string(fd));
    }
    inet_ntop(AF_INET, &addr.sin_addr, text, sizeof(text));
    port = ntohs(addr.sin_port);
  } else if (family == 6) {
    sockaddr_in6 addr{};
    socklen_t len = sizeof(addr);
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &addr, &len) != 0) {
      throw SyscallError(env, "getsockopt", errno, "IP6T_SO_ORIGINAL_DST on fd " + std::to_string(fd));
    }
    inet_ntop(AF_INET6, &addr.sin6_addr, text, sizeof(text));
    port = ntohs(addr.sin6_port);
  } else {
    throw Napi::RangeError::New(env, "family must be 4 or 6");
  }

  Napi::Object result = Napi::Object::New(env);
  result.Set("address", Napi::String::New(env, text));
  result.Set("port", Napi::Number::New(env, port));
  return result;
}

}  // namespace sigil
