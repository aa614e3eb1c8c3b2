#include "warm_handshake.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>

namespace sigil {
namespace {

constexpr uint8_t kTokenVersion = 1;
constexpr uint8_t kMacSyn = 3;
constexpr uint8_t kMacSynAck = 4;
constexpr size_t kMacBytes = 32;
constexpr int kHookLocalOut = 3;
constexpr uint8_t kSyn = 0x02, kRst = 0x04, kFin = 0x01, kAck = 0x10;
constexpr int kAccept = 1;
// Same as sidecar/fastpath/enforcer.ts: handshake state older than this is forgotten.
constexpr int64_t kPendingTtlMs = 60000;
constexpr size_t kMaxPending = 65536;
constexpr size_t kNoncePoolBytes = kNonceBytes * 256;
const char kContext[] = "sigil fast-path token v1";  // with its terminating NUL: 25 bytes, as token.ts

void Append(Bytes& out, const uint8_t* data, size_t n) { out.insert(out.end(), data, data + n); }

void AppendU64(Bytes& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

int64_t ReadU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  // Larger than 2^53 - 1 cannot be a timestamp JS accepts either; report it as far in the future.
  return v > 0x1fffffffffffffULL ? INT64_MAX : static_cast<int64_t>(v);
}

Tuple TupleOf(const TcpView& v, bool clientIsSource) {
  Tuple t;
  t.family = v.family;
  const size_t n = t.AddressLength();
  std::memcpy(t.client, clientIsSource ? v.src : v.dst, n);
  std::memcpy(t.server, clientIsSource ? v.dst : v.src, n);
  t.clientPort = clientIsSource ? v.srcPort : v.dstPort;
  t.serverPort = clientIsSource ? v.dstPort : v.srcPort;
  return t;
}

// The MAC proof of a token, as token.ts computes it: HMAC-SHA-256 under the pair key over the
// context string, every token byte before the proof, and the connection's 4-tuple.
bool ProofMac(const PairKey& key, const uint8_t* signedPart, size_t signedLength, const Tuple& tuple, uint8_t out[kMacBytes]) {
  Bytes message;
  message.reserve(sizeof(kContext) + signedLength + 37);
  Append(message, reinterpret_cast<const uint8_t*>(kContext), sizeof(kContext));
  Append(message, signedPart, signedLength);
  tuple.AppendProofBytes(message);
  unsigned int written = 0;
  return HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), message.data(), message.size(), out, &written) !=
             nullptr &&
         written == kMacBytes;
}

// Inserts into a cache bounded by `max` entries; past it an arbitrary entry makes room.
template <typename Map, typename Value>
void PutBounded(Map& map, const std::string& key, Value value, size_t max) {
  if (map.size() >= max && !map.count(key)) map.erase(map.begin());
  map[key] = std::move(value);
}

std::string DecisionKey(Direction direction, uint32_t peerRef, int family, const uint8_t* address, uint16_t port) {
  std::string key = WarmHandshakes::Endpoint(family, address, port);
  key.push_back(static_cast<char>(direction));
  key.append(reinterpret_cast<const char*>(&peerRef), sizeof(peerRef));
  return key;
}

}  // namespace

std::string Tuple::Key() const {
  std::string key(1 + 2 * AddressLength() + 4, '\0');
  key[0] = static_cast<char>(family);
  std::memcpy(&key[1], client, AddressLength());
  std::memcpy(&key[1 + AddressLength()], server, AddressLength());
  const size_t at = 1 + 2 * AddressLength();
  key[at] = static_cast<char>(clientPort >> 8);
  key[at + 1] = static_cast<char>(clientPort & 0xff);
  key[at + 2] = static_cast<char>(serverPort >> 8);
  key[at + 3] = static_cast<char>(serverPort & 0xff);
  return key;
}

void Tuple::AppendProofBytes(Bytes& out) const {
  out.push_back(static_cast<uint8_t>(AddressLength()));
  Append(out, client, AddressLength());
  Append(out, server, AddressLength());
  out.push_back(static_cast<uint8_t>(clientPort >> 8));
  out.push_back(static_cast<uint8_t>(clientPort & 0xff));
  out.push_back(static_cast<uint8_t>(serverPort >> 8));
  out.push_back(static_cast<uint8_t>(serverPort & 0xff));
}

NonceCheck ReplayCache::Remember(const Nonce& nonce, int64_t nowMs) {
  std::string key(reinterpret_cast<const char*>(nonce.data()), nonce.size());
  auto it = until_.find(key);
  // Live through `until` itself: a token accepted a full window early still passes a full window late.
  if (it != until_.end() && it->second >= nowMs) return NonceCheck::kReplayed;
  if (until_.size() >= maxEntries_) Sweep(nowMs);
  if (until_.size() >= maxEntries_) return NonceCheck::kFull;
  const int64_t until = nowMs + retainMs_;
  until_[key] = until;
  order_.emplace_back(until, std::move(key));
  return NonceCheck::kOk;
}

void ReplayCache::Sweep(int64_t nowMs) {
  while (!order_.empty() && order_.front().first < nowMs) {
    auto it = until_.find(order_.front().second);
    // A nonce seen again after it expired was re-recorded with a later time: keep that one.
    if (it != until_.end() && it->second == order_.front().first) until_.erase(it);
    order_.pop_front();
  }
}

WarmHandshakes::WarmHandshakes(const WarmSettings& settings)
    : settings_(settings),
      replays_(2 * settings.windowMs, settings.replayEntries),
      pendingOut_(kPendingTtlMs, kMaxPending),
      pendingIn_(kPendingTtlMs, kMaxPending) {}

std::string WarmHandshakes::Endpoint(int family, const uint8_t* address, uint16_t port) {
  const size_t n = family == 4 ? 4 : 16;
  std::string key(1 + n + 2, '\0');
  key[0] = static_cast<char>(family);
  std::memcpy(&key[1], address, n);
  key[1 + n] = static_cast<char>(port >> 8);
  key[2 + n] = static_cast<char>(port & 0xff);
  return key;
}

void WarmHandshakes::SetLocal(const Bytes& chainSection, const Digest& digest) {
  localChain_ = chainSection;
  localDigest_ = digest;
  hasLocal_ = true;
  servers_.clear();
  ForgetPeers();
}

void WarmHandshakes::LearnServer(const std::string& endpoint, const Digest& digest, const PairKey& key) {
  PutBounded(servers_, endpoint, Server{digest, key}, kMaxEntries);
}

void WarmHandshakes::ForgetServer(const std::string& endpoint) { servers_.erase(endpoint); }

void WarmHandshakes::RememberPeer(const Bytes& chainSection, bool asServer, const Digest& digest, uint32_t ref,
                                  int64_t validUntilMs, const PairKey& key) {
  std::string section(1, asServer ? 's' : 'c');
  section.append(chainSection.begin(), chainSection.end());
  PutBounded(peers_, section, Peer{digest, ref, validUntilMs, key}, kMaxEntries);
}

void WarmHandshakes::RememberDecision(Direction direction, uint32_t peerRef, int family, const uint8_t* address, uint16_t port,
                                      bool allow, uint32_t decisionRef) {
  PutBounded(decisions_, DecisionKey(direction, peerRef, family, address, port), Decision{allow, decisionRef},
             kMaxDecisions);
}

void WarmHandshakes::ForgetPeers() {
  peers_.clear();
  ForgetDecisions();
}

void WarmHandshakes::ForgetDecisions() { decisions_.clear(); }

const WarmHandshakes::Decision* WarmHandshakes::FindDecision(Direction direction, uint32_t peerRef, int family,
                                                             const uint8_t* address, uint16_t port) const {
  auto it = decisions_.find(DecisionKey(direction, peerRef, family, address, port));
  return it == decisions_.end() ? nullptr : &it->second;
}

std::vector<FlowEvent> WarmHandshakes::TakeFlows() {
  std::vector<FlowEvent> out;
  out.swap(flows_);
  return out;
}

void WarmHandshakes::Record(Direction direction, const Tuple& tuple, uint32_t peerRef, uint32_t decisionRef, int64_t nowMs) {
  flows_.push_back(FlowEvent{direction, tuple, peerRef, decisionRef, nowMs});
}

void WarmHandshakes::AddTiming(PacketKind kind, uint64_t decideNs, uint64_t verdictNs) {
  counters_.kinds[kind].decideNs += decideNs;
  counters_.kinds[kind].verdictNs += verdictNs;
}

bool WarmHandshakes::NextNonce(Nonce& out) {
  if (noncePoolAt_ + kNonceBytes > noncePool_.size()) {
    noncePool_.resize(kNoncePoolBytes);
    if (RAND_bytes(noncePool_.data(), static_cast<int>(noncePool_.size())) != 1) {
      noncePool_.clear();
      noncePoolAt_ = 0;
      return false;
    }
    noncePoolAt_ = 0;
  }
  std::memcpy(out.data(), noncePool_.data() + noncePoolAt_, kNonceBytes);
  // Each nonce is used once: wipe it from the pool as it is taken.
  std::memset(noncePool_.data() + noncePoolAt_, 0, kNonceBytes);
  noncePoolAt_ += kNonceBytes;
  return true;
}

WarmVerdict WarmHandshakes::Handle(const uint8_t* data, size_t length, int hook, uint32_t mark, int64_t nowMs) {
  WarmVerdict out;
  if (!hasLocal_) return out;
  try {
    const Bytes packet(data, data + length);
    const TcpView v = ParseTcp(packet, settings_.exid);
    if (!(v.flags & kSyn) || (v.flags & (kRst | kFin))) return out;
    const bool ack = (v.flags & kAck) != 0;
    const bool outbound = hook == kHookLocalOut;
    out.known = true;
    out.kind = ack ? (outbound ? kOurSynAck : kPeerSynAck) : (outbound ? kOurSyn : kPeerSyn);
    switch (out.kind) {
      case kOurSyn: out.handled = OurSyn(out, packet, v, mark, nowMs); break;
      case kPeerSyn: out.handled = PeerSyn(out, packet, v, mark, nowMs); break;
      case kOurSynAck: out.handled = OurSynAck(out, packet, v, nowMs); break;
      default: out.handled = PeerSynAck(out, packet, v, mark, nowMs); break;
    }
  } catch (const std::exception&) {
    // Malformed input (PacketError) or no memory: JS decides, and a refusal gets its reason there.
    out.handled = false;
  }
  if (out.known) {
    if (out.handled) ++counters_.kinds[out.kind].handled;
    else ++counters_.kinds[out.kind].handedToJs;
  }
  return out;
}

Bytes WarmHandshakes::BuildMacToken(bool synAck, const Nonce& nonce, int64_t nowMs, const Nonce* echo, const Digest& keyId,
                                    const PairKey& key, const Tuple& tuple) const {
  Bytes token;
  token.reserve(2 + kNonceBytes + 8 + kNonceBytes + localChain_.size() + kDigestBytes + kMacBytes);
  token.push_back(kTokenVersion);
  token.push_back(synAck ? kMacSynAck : kMacSyn);
  Append(token, nonce.data(), nonce.size());
  AppendU64(token, static_cast<uint64_t>(nowMs));
  if (synAck) Append(token, echo->data(), echo->size());
  Append(token, localChain_.data(), localChain_.size());
  Append(token, keyId.data(), keyId.size());
  uint8_t mac[kMacBytes];
  if (!ProofMac(key, token.data(), token.size(), tuple, mac)) return Bytes();
  Append(token, mac, kMacBytes);
  return token;
}

bool WarmHandshakes::ParseMacToken(const Bytes& token, bool synAck, MacToken& out) const {
  const size_t header = 2 + kNonceBytes + 8 + (synAck ? kNonceBytes : 0);
  if (token.size() < header + 1 || token[0] != kTokenVersion || token[1] != (synAck ? kMacSynAck : kMacSyn)) return false;
  out.nonce = &token[2];
  out.timestampMs = ReadU64(&token[2 + kNonceBytes]);
  out.echoNonce = synAck ? &token[2 + kNonceBytes + 8] : nullptr;
  size_t at = header;
  const size_t chainStart = at;
  const uint8_t count = token[at++];
  if (count < 1 || count > 4) return false;
  for (uint8_t i = 0; i < count; ++i) {
    if (at + 2 > token.size()) return false;
    const size_t len = (static_cast<size_t>(token[at]) << 8) | token[at + 1];
    at += 2;
    if (at + len > token.size()) return false;
    at += len;
  }
  out.peerKey.assign(1, synAck ? 's' : 'c');
  out.peerKey.append(reinterpret_cast<const char*>(&token[chainStart]), at - chainStart);
  if (token.size() != at + kDigestBytes + kMacBytes) return false;
  out.keyId = &token[at];
  out.signedLength = at + kDigestBytes;
  out.mac = &token[out.signedLength];
  return true;
}

const WarmHandshakes::Peer* WarmHandshakes::VerifyMacToken(const Bytes& token, const MacToken& parsed, const Tuple& tuple,
                                                           int64_t nowMs) const {
  if (parsed.timestampMs < nowMs - settings_.windowMs || parsed.timestampMs > nowMs + settings_.windowMs) return nullptr;
  if (std::memcmp(parsed.keyId, localDigest_.data(), kDigestBytes) != 0) return nullptr;
  auto it = peers_.find(parsed.peerKey);
  if (it == peers_.end() || it->second.validUntilMs <= nowMs) return nullptr;
  uint8_t expected[kMacBytes];
  if (!ProofMac(it->second.key, token.data(), parsed.signedLength, tuple, expected)) return nullptr;
  if (CRYPTO_memcmp(expected, parsed.mac, kMacBytes) != 0) return nullptr;
  return &it->second;
}

bool WarmHandshakes::OurSyn(WarmVerdict& out, const Bytes& packet, const TcpView& v, uint32_t mark, int64_t nowMs) {
  if (v.tokenOption || v.payloadLength > 0) return false;
  const Tuple tuple = TupleOf(v, /*clientIsSource=*/true);
  // A retransmitted SYN may mean the server lost our pair key: JS answers it with a signature.
  if (pendingOut_.Find(tuple.Key(), nowMs)) return false;
  auto server = servers_.find(Endpoint(v.family, v.dst, v.dstPort));
  if (server == servers_.end()) return false;
  Nonce nonce;
  if (!NextNonce(nonce)) return false;
  const Bytes token = BuildMacToken(false, nonce, nowMs, nullptr, server->second.digest, server->second.key, tuple);
  if (token.empty()) return false;
  out.packet = InsertToken(packet, token, settings_.exid);
  PendingOut pending;
  pending.nonces.push_back(nonce);
  pending.at = nowMs;
  pendingOut_.Set(tuple.Key(), std::move(pending));
  ++counters_.synSigned;
  out.verdict = kAccept;
  out.setMark = true;
  out.mark = WithMark(mark, settings_.marks.pendingOut);
  out.replace = true;
  return true;
}

// The last check before a peer's token is accepted: its nonce, never seen before, is now spent.
bool WarmHandshakes::SpendNonce(const MacToken& parsed, int64_t nowMs, Nonce& nonce) {
  std::memcpy(nonce.data(), parsed.nonce, kNonceBytes);
  if (replays_.Remember(nonce, nowMs) != NonceCheck::kOk) return false;
  ++counters_.macProofs;
  return true;
}

bool WarmHandshakes::PeerSyn(WarmVerdict& out, const Bytes& packet, const TcpView& v, uint32_t mark, int64_t nowMs) {
  if (!v.tokenOption || !FlowRoom()) return false;
  auto extracted = ExtractToken(packet, settings_.exid);
  if (!extracted) return false;
  const Bytes& token = extracted->second;
  MacToken parsed;
  if (!ParseMacToken(token, /*synAck=*/false, parsed)) return false;
  const Tuple tuple = TupleOf(v, /*clientIsSource=*/true);
  const Peer* peer = VerifyMacToken(token, parsed, tuple, nowMs);
  if (!peer) return false;
  const Decision* decision = FindDecision(kIngress, peer->ref, v.family, v.src, v.dstPort);
  if (!decision) return false;
  Nonce nonce;
  if (!SpendNonce(parsed, nowMs, nonce)) return false;
  out.verdict = kAccept;
  out.setMark = true;
  out.replace = true;
  out.packet = std::move(extracted->first);
  if (decision->allow) {
    PendingIn pending;
    pending.clientNonce = nonce;
    pending.mac = true;
    pending.key = peer->key;
    pending.keyId = peer->digest;
    pending.at = nowMs;
    SetPendingIn(tuple, std::move(pending));
    ++counters_.synAccepted;
    out.mark = WithMark(mark, settings_.marks.pendingIn);
  } else {
    ++counters_.policyRefusals;
    ++counters_.synDenied;
    out.mark = WithMark(mark, settings_.marks.deny);
  }
  Record(kIngress, tuple, peer->ref, decision->ref, nowMs);
  return true;
}

bool WarmHandshakes::OurSynAck(WarmVerdict& out, const Bytes& packet, const TcpView& v, int64_t nowMs) {
  if (v.tokenOption || v.payloadLength > 0) return false;
  const Tuple tuple = TupleOf(v, /*clientIsSource=*/false);
  const PendingIn* pending = pendingIn_.Find(tuple.Key(), nowMs);
  if (!pending || !AnswerByMac(*pending)) return false;
  Nonce nonce;
  if (!NextNonce(nonce)) return false;
  const Bytes token = BuildMacToken(true, nonce, nowMs, &pending->clientNonce, pending->keyId, pending->key, tuple);
  if (token.empty()) return false;
  out.packet = InsertToken(packet, token, settings_.exid);
  ++counters_.synAckSigned;
  out.verdict = kAccept;
  out.replace = true;
  return true;
}

bool WarmHandshakes::PeerSynAck(WarmVerdict& out, const Bytes& packet, const TcpView& v, uint32_t mark, int64_t nowMs) {
  if (!v.tokenOption || !FlowRoom()) return false;
  const Tuple tuple = TupleOf(v, /*clientIsSource=*/false);
  const std::string key = tuple.Key();
  const PendingOut* pending = pendingOut_.Find(key, nowMs);
  if (!pending) return false;
  auto extracted = ExtractToken(packet, settings_.exid);
  if (!extracted) return false;
  const Bytes& token = extracted->second;
  MacToken parsed;
  if (!ParseMacToken(token, /*synAck=*/true, parsed)) return false;
  bool ours = false;
  for (const Nonce& n : pending->nonces) ours = ours || std::memcmp(n.data(), parsed.echoNonce, kNonceBytes) == 0;
  if (!ours) return false;
  const Peer* peer = VerifyMacToken(token, parsed, tuple, nowMs);
  if (!peer) return false;
  // The server must still be the identity this side learned for its address, or JS relearns it.
  auto server = servers_.find(Endpoint(v.family, v.src, v.srcPort));
  if (server == servers_.end() || server->second.digest != peer->digest) return false;
  const Decision* decision = FindDecision(kEgress, peer->ref, v.family, v.src, v.srcPort);
  if (!decision) return false;
  Nonce nonce;
  if (!SpendNonce(parsed, nowMs, nonce)) return false;
  out.verdict = kAccept;
  out.setMark = true;
  out.replace = true;
  if (decision->allow) {
    ++counters_.synAckAccepted;
    out.mark = WithMark(mark, settings_.marks.accepted);
    out.packet = std::move(extracted->first);
  } else {
    ++counters_.policyRefusals;
    ++counters_.synAckRefused;
    out.mark = WithMark(mark, settings_.marks.refused);
    out.packet = RewriteAsReset(packet);
  }
  pendingOut_.Erase(key);
  Record(kEgress, tuple, peer->ref, decision->ref, nowMs);
  return true;
}

}  // namespace sigil
