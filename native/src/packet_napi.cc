#include "packet_napi.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include "tcp_packet.h"

namespace sigil {
namespace {

Bytes ToBytes(const Napi::Value& value, const char* name) {
  if (!value.IsBuffer()) throw Napi::TypeError::New(value.Env(), std::string(name) + " must be a Buffer");
  auto buf = value.As<Napi::Buffer<uint8_t>>();
  return Bytes(buf.Data(), buf.Data() + buf.Length());
}

uint16_t ToExid(const Napi::Value& value) {
  if (!value.IsNumber()) throw Napi::TypeError::New(value.Env(), "exid must be a number");
  const int64_t exid = value.As<Napi::Number>().Int64Value();
  if (exid < 0 || exid > 0xffff) throw Napi::RangeError::New(value.Env(), "exid must be 0..65535");
  return static_cast<uint16_t>(exid);
}

Napi::Buffer<uint8_t> ToBuffer(Napi::Env env, const Bytes& bytes) {
  return Napi::Buffer<uint8_t>::Copy(env, bytes.data(), bytes.size());
}

Napi::String AddressString(Napi::Env env, int family, const uint8_t* addr) {
  char text[INET6_ADDRSTRLEN] = {0};
  inet_ntop(family == 4 ? AF_INET : AF_INET6, addr, text, sizeof(text));
  return Napi::String::New(env, text);
}

template <typename F>
auto Guard(Napi::Env env, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const PacketError& e) {
    Napi::Error err = Napi::Error::New(env, e.what());
    err.Set("code", Napi::String::New(env, "EPACKET"));
    throw err;
  }
}

// Returns the fields as an array in a fixed order (see PARSED_FIELDS in index.ts): indexed
// elements cost far less to create than named properties, and parseTcp runs on every handshake
// packet; the typed loader turns the array into a TcpInfo object.
Napi::Value ParseTcpJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Bytes packet = ToBytes(info[0], "packet");
  const uint16_t exid = ToExid(info[1]);
  const TcpView v = Guard(env, [&] { return ParseTcp(packet, exid); });
  Napi::Array a = Napi::Array::New(env, 11);
  a.Set(0u, Napi::Number::New(env, v.family));
  a.Set(1u, AddressString(env, v.family, v.src));
  a.Set(2u, AddressString(env, v.family, v.dst));
  a.Set(3u, Napi::Number::New(env, v.srcPort));
  a.Set(4u, Napi::Number::New(env, v.dstPort));
  a.Set(5u, Napi::Number::New(env, v.seq));
  a.Set(6u, Napi::Number::New(env, v.ack));
  a.Set(7u, Napi::Number::New(env, v.flags));
  a.Set(8u, Napi::Number::New(env, static_cast<double>(v.tcpHeaderLength)));
  a.Set(9u, Napi::Number::New(env, static_cast<double>(v.payloadLength)));
  a.Set(10u, Napi::Boolean::New(env, v.tokenOption.has_value()));
  return a;
}

Napi::Value InsertTokenJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Bytes packet = ToBytes(info[0], "packet");
  const Bytes token = ToBytes(info[1], "token");
  const uint16_t exid = ToExid(info[2]);
  return ToBuffer(env, Guard(env, [&] { return InsertToken(packet, token, exid); }));
}

Napi::Value ExtractTokenJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Bytes packet = ToBytes(info[0], "packet");
  const uint16_t exid = ToExid(info[1]);
  auto result = Guard(env, [&] { return ExtractToken(packet, exid); });
  if (!result) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("packet", ToBuffer(env, result->first));
  o.Set("token", ToBuffer(env, result->second));
  return o;
}

Napi::Value RewriteAsResetJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Bytes packet = ToBytes(info[0], "packet");
  return ToBuffer(env, Guard(env, [&] { return RewriteAsReset(packet); }));
}

}  // namespace

void RegisterPacketFunctions(Napi::Env env, Napi::Object exports) {
  exports.Set("parseTcp", Napi::Function::New(env, ParseTcpJs));
  exports.Set("insertToken", Napi::Function::New(env, InsertTokenJs));
  exports.Set("extractToken", Napi::Function::New(env, ExtractTokenJs));
  exports.Set("rewriteAsReset", Napi::Function::New(env, RewriteAsResetJs));
}

}  // namespace sigil
