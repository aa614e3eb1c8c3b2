#include "warm_handshake_napi.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cstring>
#include <ctime>
#include <string>

namespace sigil {
namespace {

// Marks objects made by this class, so a queue given something else refuses it instead of misreading it.
const napi_type_tag kWarmTag = {0x5a1e6c0d3f7b4e21ULL, 0x9c8d2b1a40f65e73ULL};

uint32_t U32(const Napi::Value& v, const char* name) {
  if (!v.IsNumber()) throw Napi::TypeError::New(v.Env(), std::string(name) + " must be a number");
  const int64_t n = v.As<Napi::Number>().Int64Value();
  if (n < 0 || n > 0xffffffffLL) throw Napi::RangeError::New(v.Env(), std::string(name) + " must be 0..2^32-1");
  return static_cast<uint32_t>(n);
}

uint16_t Port(const Napi::Value& v, const char* name) {
  const uint32_t n = U32(v, name);
  if (n > 0xffff) throw Napi::RangeError::New(v.Env(), std::string(name) + " must be 0..65535");
  return static_cast<uint16_t>(n);
}

int64_t Ms(const Napi::Value& v, const char* name) {
  if (!v.IsNumber()) throw Napi::TypeError::New(v.Env(), std::string(name) + " must be a number");
  return v.As<Napi::Number>().Int64Value();
}

template <size_t N>
std::array<uint8_t, N> Fixed(const Napi::Value& v, const char* name) {
  if (!v.IsBuffer() || v.As<Napi::Buffer<uint8_t>>().Length() != N) {
    throw Napi::TypeError::New(v.Env(), std::string(name) + " must be a " + std::to_string(N) + "-byte Buffer");
  }
  std::array<uint8_t, N> out;
  std::memcpy(out.data(), v.As<Napi::Buffer<uint8_t>>().Data(), N);
  return out;
}

Bytes AnyBytes(const Napi::Value& v, const char* name) {
  if (!v.IsBuffer()) throw Napi::TypeError::New(v.Env(), std::string(name) + " must be a Buffer");
  auto buf = v.As<Napi::Buffer<uint8_t>>();
  return Bytes(buf.Data(), buf.Data() + buf.Length());
}

// An IP address as text into bytes; returns its family (4 or 6).
int Address(const Napi::Value& v, const char* name, uint8_t out[16]) {
  if (!v.IsString()) throw Napi::TypeError::New(v.Env(), std::string(name) + " must be an IP address string");
  const std::string text = v.As<Napi::String>().Utf8Value();
  if (inet_pton(AF_INET, text.c_str(), out) == 1) return 4;
  if (inet_pton(AF_INET6, text.c_str(), out) == 1) return 6;
  throw Napi::TypeError::New(v.Env(), std::string(name) + " is not an IP address: " + text);
}

Napi::String AddressText(Napi::Env env, int family, const uint8_t* address) {
  char text[INET6_ADDRSTRLEN] = {0};
  inet_ntop(family == 4 ? AF_INET : AF_INET6, address, text, sizeof(text));
  return Napi::String::New(env, text);
}

// Arguments (clientAddress, clientPort, serverAddress, serverPort) starting at `at`.
Tuple TupleArg(const Napi::CallbackInfo& info, size_t at) {
  Tuple t;
  t.family = Address(info[at], "clientAddress", t.client);
  t.clientPort = Port(info[at + 1], "clientPort");
  if (Address(info[at + 2], "serverAddress", t.server) != t.family) {
    throw Napi::TypeError::New(info.Env(), "client and server addresses must be of one family");
  }
  t.serverPort = Port(info[at + 3], "serverPort");
  return t;
}

Napi::Buffer<uint8_t> Copy(Napi::Env env, const uint8_t* data, size_t n) { return Napi::Buffer<uint8_t>::Copy(env, data, n); }

class WarmHandshakesWrap : public Napi::ObjectWrap<WarmHandshakesWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "WarmHandshakes",
                       {
                           InstanceMethod<&WarmHandshakesWrap::SetLocal>("setLocal"),
                           InstanceMethod<&WarmHandshakesWrap::LearnServer>("learnServer"),
                           InstanceMethod<&WarmHandshakesWrap::ForgetServer>("forgetServer"),
                           InstanceMethod<&WarmHandshakesWrap::RememberPeer>("rememberPeer"),
                           InstanceMethod<&WarmHandshakesWrap::RememberDecision>("rememberDecision"),
                           InstanceMethod<&WarmHandshakesWrap::ForgetPeers>("forgetPeers"),
                           InstanceMethod<&WarmHandshakesWrap::ForgetDecisions>("forgetDecisions"),
                           InstanceMethod<&WarmHandshakesWrap::RememberNonce>("rememberNonce"),
                           InstanceMethod<&WarmHandshakesWrap::PendingOutOf>("pendingOut"),
                           InstanceMethod<&WarmHandshakesWrap::SetPendingOut>("setPendingOut"),
                           InstanceMethod<&WarmHandshakesWrap::DeletePendingOut>("deletePendingOut"),
                           InstanceMethod<&WarmHandshakesWrap::PendingInOf>("pendingIn"),
                           InstanceMethod<&WarmHandshakesWrap::SetPendingIn>("setPendingIn"),
                           InstanceMethod<&WarmHandshakesWrap::Handle>("handle"),
                           InstanceMethod<&WarmHandshakesWrap::TakeFlows>("takeFlows"),
                           InstanceMethod<&WarmHandshakesWrap::Stats>("stats"),
                       });
  }

  // new WarmHandshakes({ exid, windowMs, replayEntries, marks: { mask, accepted, deny, pendingOut, pendingIn, refused } })
  explicit WarmHandshakesWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<WarmHandshakesWrap>(info), table_(Settings(info)) {
    info.This().As<Napi::Object>().TypeTag(&kWarmTag);
  }

  WarmHandshakes& Table() { return table_; }

 private:
  static WarmSettings Settings(const Napi::CallbackInfo& info) {
    if (info.Length() != 1 || !info[0].IsObject()) throw Napi::TypeError::New(info.Env(), "new WarmHandshakes(settings: object)");
    Napi::Object o = info[0].As<Napi::Object>();
    if (!o.Get("marks").IsObject()) throw Napi::TypeError::New(info.Env(), "settings.marks must be an object");
    Napi::Object m = o.Get("marks").As<Napi::Object>();
    WarmSettings s;
    s.exid = Port(o.Get("exid"), "settings.exid");
    s.windowMs = Ms(o.Get("windowMs"), "settings.windowMs");
    s.replayEntries = U32(o.Get("replayEntries"), "settings.replayEntries");
    s.marks.mask = U32(m.Get("mask"), "marks.mask");
    s.marks.accepted = U32(m.Get("accepted"), "marks.accepted");
    s.marks.deny = U32(m.Get("deny"), "marks.deny");
    s.marks.pendingOut = U32(m.Get("pendingOut"), "marks.pendingOut");
    s.marks.pendingIn = U32(m.Get("pendingIn"), "marks.pendingIn");
    s.marks.refused = U32(m.Get("refused"), "marks.refused");
    if (s.windowMs <= 0) throw Napi::RangeError::New(info.Env(), "settings.windowMs must be positive");
    return s;
  }

  // setLocal(chainSection, digest)
  Napi::Value SetLocal(const Napi::CallbackInfo& info) {
    table_.SetLocal(AnyBytes(info[0], "chainSection"), Fixed<kDigestBytes>(info[1], "digest"));
    return info.Env().Undefined();
  }

  // learnServer(address, port, digest, key)
  Napi::Value LearnServer(const Napi::CallbackInfo& info) {
    uint8_t address[16] = {0};
    const int family = Address(info[0], "address", address);
    table_.LearnServer(WarmHandshakes::Endpoint(family, address, Port(info[1], "port")), Fixed<kDigestBytes>(info[2], "digest"),
                       Fixed<kPairKeyBytes>(info[3], "key"));
    return info.Env().Undefined();
  }

  // forgetServer(address, port)
  Napi::Value ForgetServer(const Napi::CallbackInfo& info) {
    uint8_t address[16] = {0};
    const int family = Address(info[0], "address", address);
    table_.ForgetServer(WarmHandshakes::Endpoint(family, address, Port(info[1], "port")));
    return info.Env().Undefined();
  }

  // rememberPeer(chainSection, purpose: "client" | "server", digest, ref, validUntilMs, key)
  Napi::Value RememberPeer(const Napi::CallbackInfo& info) {
    const std::string purpose = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
    if (purpose != "client" && purpose != "server") throw Napi::TypeError::New(info.Env(), "purpose must be \"client\" or \"server\"");
    table_.RememberPeer(AnyBytes(info[0], "chainSection"), purpose == "server", Fixed<kDigestBytes>(info[2], "digest"),
                        U32(info[3], "ref"), Ms(info[4], "validUntilMs"), Fixed<kPairKeyBytes>(info[5], "key"));
    return info.Env().Undefined();
  }

  // rememberDecision(direction: 0 ingress | 1 egress, peerRef, peerAddress, port, allow, decisionRef)
  Napi::Value RememberDecision(const Napi::CallbackInfo& info) {
    const uint32_t direction = U32(info[0], "direction");
    if (direction > 1) throw Napi::RangeError::New(info.Env(), "direction must be 0 (ingress) or 1 (egress)");
    uint8_t address[16] = {0};
    const int family = Address(info[2], "peerAddress", address);
    if (!info[4].IsBoolean()) throw Napi::TypeError::New(info.Env(), "allow must be a boolean");
    table_.RememberDecision(static_cast<Direction>(direction), U32(info[1], "peerRef"), family, address, Port(info[3], "port"),
                            info[4].As<Napi::Boolean>().Value(), U32(info[5], "decisionRef"));
    return info.Env().Undefined();
  }

  Napi::Value ForgetPeers(const Napi::CallbackInfo& info) {
    table_.ForgetPeers();
    return info.Env().Undefined();
  }

  Napi::Value ForgetDecisions(const Napi::CallbackInfo& info) {
    table_.ForgetDecisions();
    return info.Env().Undefined();
  }

  // rememberNonce(nonce, nowMs): 0 ok | 1 replayed | 2 full
  Napi::Value RememberNonce(const Napi::CallbackInfo& info) {
    const NonceCheck r = table_.RememberNonce(Fixed<kNonceBytes>(info[0], "nonce"), Ms(info[1], "nowMs"));
    return Napi::Number::New(info.Env(), static_cast<int>(r));
  }

  // pendingOut(clientAddress, clientPort, serverAddress, serverPort, nowMs): the nonces sent, or null
  Napi::Value PendingOutOf(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const PendingOut* p = table_.FindPendingOut(TupleArg(info, 0), Ms(info[4], "nowMs"));
    if (!p) return env.Null();
    Napi::Array nonces = Napi::Array::New(env, p->nonces.size());
    for (size_t i = 0; i < p->nonces.size(); ++i) nonces.Set(static_cast<uint32_t>(i), Copy(env, p->nonces[i].data(), kNonceBytes));
    return nonces;
  }

  // setPendingOut(clientAddress, clientPort, serverAddress, serverPort, nonces, nowMs)
  Napi::Value SetPendingOut(const Napi::CallbackInfo& info) {
    const Tuple t = TupleArg(info, 0);
    if (!info[4].IsArray()) throw Napi::TypeError::New(info.Env(), "nonces must be an array of Buffers");
    Napi::Array list = info[4].As<Napi::Array>();
    PendingOut p;
    for (uint32_t i = 0; i < list.Length(); ++i) p.nonces.push_back(Fixed<kNonceBytes>(list.Get(i), "nonce"));
    p.at = Ms(info[5], "nowMs");
    table_.SetPendingOut(t, std::move(p));
    return info.Env().Undefined();
  }

  Napi::Value DeletePendingOut(const Napi::CallbackInfo& info) {
    table_.ErasePendingOut(TupleArg(info, 0));
    return info.Env().Undefined();
  }

  // pendingIn(clientAddress, clientPort, serverAddress, serverPort, nowMs): [clientNonce, key | null, keyId | null] or null;
  // the key only while our SYN-ACK may still answer by MAC (no rotation since the client was accepted)
  Napi::Value PendingInOf(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const PendingIn* p = table_.FindPendingIn(TupleArg(info, 0), Ms(info[4], "nowMs"));
    if (!p) return env.Null();
    const bool mac = table_.AnswerByMac(*p);
    Napi::Array out = Napi::Array::New(env, 3);
    out.Set(0u, Copy(env, p->clientNonce.data(), kNonceBytes));
    out.Set(1u, mac ? Napi::Value(Copy(env, p->key.data(), kPairKeyBytes)) : env.Null());
    out.Set(2u, mac ? Napi::Value(Copy(env, p->keyId.data(), kDigestBytes)) : env.Null());
    return out;
  }

  // setPendingIn(clientAddress, clientPort, serverAddress, serverPort, clientNonce, key | null, keyId | null, nowMs)
  Napi::Value SetPendingIn(const Napi::CallbackInfo& info) {
    const Tuple t = TupleArg(info, 0);
    PendingIn p;
    p.clientNonce = Fixed<kNonceBytes>(info[4], "clientNonce");
    p.mac = !info[5].IsNull();
    if (p.mac) {
      p.key = Fixed<kPairKeyBytes>(info[5], "key");
      p.keyId = Fixed<kDigestBytes>(info[6], "keyId");
    }
    p.at = Ms(info[7], "nowMs");
    table_.SetPendingIn(t, std::move(p));
    return info.Env().Undefined();
  }

  // handle(hook, mark, packet, nowMs): null when JS must decide, else [verdict, mark | null, packet | null, kind]
  Napi::Value Handle(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const uint32_t hook = U32(info[0], "hook");
    const uint32_t mark = U32(info[1], "mark");
    if (!info[2].IsBuffer()) throw Napi::TypeError::New(env, "packet must be a Buffer");
    auto packet = info[2].As<Napi::Buffer<uint8_t>>();
    WarmVerdict v = table_.Handle(packet.Data(), packet.Length(), static_cast<int>(hook), mark, Ms(info[3], "nowMs"));
    if (!v.handled) return env.Null();
    Napi::Array out = Napi::Array::New(env, 4);
    out.Set(0u, Napi::Number::New(env, v.verdict));
    out.Set(1u, v.setMark ? Napi::Value(Napi::Number::New(env, v.mark)) : env.Null());
    out.Set(2u, v.replace ? Napi::Value(Copy(env, v.packet.data(), v.packet.size())) : env.Null());
    out.Set(3u, Napi::Number::New(env, v.kind));
    return out;
  }

  // takeFlows(): [direction, clientAddress, clientPort, serverAddress, serverPort, peerRef, decisionRef, timeMs][]
  Napi::Value TakeFlows(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const std::vector<FlowEvent> flows = table_.TakeFlows();
    Napi::Array out = Napi::Array::New(env, flows.size());
    for (size_t i = 0; i < flows.size(); ++i) {
      const FlowEvent& f = flows[i];
      Napi::Array row = Napi::Array::New(env, 8);
      row.Set(0u, Napi::Number::New(env, f.direction));
      row.Set(1u, AddressText(env, f.tuple.family, f.tuple.client));
      row.Set(2u, Napi::Number::New(env, f.tuple.clientPort));
      row.Set(3u, AddressText(env, f.tuple.family, f.tuple.server));
      row.Set(4u, Napi::Number::New(env, f.tuple.serverPort));
      row.Set(5u, Napi::Number::New(env, f.peerRef));
      row.Set(6u, Napi::Number::New(env, f.decisionRef));
      row.Set(7u, Napi::Number::New(env, static_cast<double>(f.timeMs)));
      out.Set(static_cast<uint32_t>(i), row);
    }
    return out;
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const WarmCounters& c = table_.Counters();
    auto n = [&](uint64_t v) { return Napi::Number::New(env, static_cast<double>(v)); };
    Napi::Object o = Napi::Object::New(env);
    o.Set("synSigned", n(c.synSigned));
    o.Set("synAccepted", n(c.synAccepted));
    o.Set("synDenied", n(c.synDenied));
    o.Set("synAckSigned", n(c.synAckSigned));
    o.Set("synAckAccepted", n(c.synAckAccepted));
    o.Set("synAckRefused", n(c.synAckRefused));
    o.Set("macProofs", n(c.macProofs));
    o.Set("policyRefusals", n(c.policyRefusals));
    o.Set("peers", n(table_.Peers()));
    o.Set("servers", n(table_.Servers()));
    o.Set("decisions", n(table_.Decisions()));
    o.Set("replayEntries", n(table_.ReplaySize()));
    static const char* const kNames[kKinds] = {"ourSyn", "peerSyn", "ourSynAck", "peerSynAck"};
    Napi::Object kinds = Napi::Object::New(env);
    for (int k = 0; k < kKinds; ++k) {
      Napi::Object t = Napi::Object::New(env);
      t.Set("handled", n(c.kinds[k].handled));
      t.Set("handedToJs", n(c.kinds[k].handedToJs));
      t.Set("decideUs", Napi::Number::New(env, static_cast<double>(c.kinds[k].decideNs) / 1000.0));
      t.Set("verdictUs", Napi::Number::New(env, static_cast<double>(c.kinds[k].verdictNs) / 1000.0));
      kinds.Set(kNames[k], t);
    }
    o.Set("kinds", kinds);
    return o;
  }

  WarmHandshakes table_;
};

}  // namespace

int64_t WallClockMs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

WarmHandshakes& UnwrapWarmHandshakes(const Napi::Value& value) {
  if (!value.IsObject() || !value.As<Napi::Object>().CheckTypeTag(&kWarmTag)) {
    throw Napi::TypeError::New(value.Env(), "expected a WarmHandshakes object");
  }
  return WarmHandshakesWrap::Unwrap(value.As<Napi::Object>())->Table();
}

void RegisterWarmHandshakes(Napi::Env env, Napi::Object exports) { exports.Set("WarmHandshakes", WarmHandshakesWrap::Define(env)); }

}  // namespace sigil
