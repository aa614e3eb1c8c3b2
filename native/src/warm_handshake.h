// The warm handshake in native code: the fast path's MAC handshakes between peers the enforcer
// already knows, decided without entering JavaScript. JS (sidecar/fastpath/) stays the authority:
// it verifies certificate chains and signatures, derives pair keys and evaluates policy, and teaches
// this table what it concluded — verified peers (by the exact certificate section they present),
// servers and their pair keys, and policy decisions per peer, address and port. A packet this table
// cannot decide from what it was taught (first contact, a signature token, a token-less peer, any
// failed check, a full flow buffer) is handed to JS unchanged, so every refusal and its reason is
// still JS's. The per-connection state (nonces sent, clients' nonces, the replay cache) lives here
// for both paths, so a nonce accepted by one is a replay to the other.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <list>
#include <string>
#include <unordered_map>
#include <vector>

#include "tcp_packet.h"

namespace sigil {

constexpr size_t kNonceBytes = 16;
constexpr size_t kDigestBytes = 32;
constexpr size_t kPairKeyBytes = 32;

using Nonce = std::array<uint8_t, kNonceBytes>;
using Digest = std::array<uint8_t, kDigestBytes>;
using PairKey = std::array<uint8_t, kPairKeyBytes>;

enum PacketKind : uint8_t { kOurSyn = 0, kPeerSyn = 1, kOurSynAck = 2, kPeerSynAck = 3, kKinds = 4 };
enum Direction : uint8_t { kIngress = 0, kEgress = 1 };
enum class NonceCheck : uint8_t { kOk = 0, kReplayed = 1, kFull = 2 };

// A connection, client side first; addresses are 4 or 16 bytes by family.
struct Tuple {
  int family = 4;
  uint8_t client[16] = {0};
  uint8_t server[16] = {0};
  uint16_t clientPort = 0;
  uint16_t serverPort = 0;

  size_t AddressLength() const { return family == 4 ? 4 : 16; }
  std::string Key() const;
  // The bytes every token proof covers after the token: u8 address length, client, server, ports.
  void AppendProofBytes(Bytes& out) const;
};

struct MarkValues {
  uint32_t mask = 0;
  uint32_t accepted = 0;
  uint32_t deny = 0;
  uint32_t pendingOut = 0;
  uint32_t pendingIn = 0;
  uint32_t refused = 0;
};

struct WarmSettings {
  uint16_t exid = 0;
  int64_t windowMs = 0;
  size_t replayEntries = 0;
  MarkValues marks;
};

// A decision made here, for JS to turn into a flow record.
struct FlowEvent {
  Direction direction;
  Tuple tuple;
  uint32_t peerRef;
  uint32_t decisionRef;
  int64_t timeMs;
};

struct WarmVerdict {
  bool handled = false;
  bool known = false;  // `kind` is meaningful (the packet parsed as a handshake segment)
  PacketKind kind = kOurSyn;
  int verdict = 0;
  bool setMark = false;
  uint32_t mark = 0;
  bool replace = false;
  Bytes packet;
};

struct PendingOut {
  std::vector<Nonce> nonces;
  int64_t at = 0;
};

struct PendingIn {
  Nonce clientNonce{};
  bool mac = false;
  PairKey key{};
  Digest keyId{};
  // Our certificate when the client was accepted, the one `key` was derived against (set by the table).
  Digest localDigest{};
  int64_t at = 0;
};

struct KindCounters {
  uint64_t handled = 0;
  uint64_t handedToJs = 0;
  uint64_t decideNs = 0;
  uint64_t verdictNs = 0;
};

struct WarmCounters {
  uint64_t synSigned = 0, synAccepted = 0, synDenied = 0;
  uint64_t synAckSigned = 0, synAckAccepted = 0, synAckRefused = 0;
  uint64_t macProofs = 0, policyRefusals = 0;
  KindCounters kinds[kKinds];
};

// Entries in insertion order with a time-to-live and a size bound, oldest dropped first.
template <typename V>
class ExpiringTable {
 public:
  ExpiringTable(int64_t ttlMs, size_t maxEntries) : ttlMs_(ttlMs), maxEntries_(maxEntries) {}

  V* Find(const std::string& key, int64_t nowMs) {
    auto it = index_.find(key);
    if (it == index_.end() || it->second->second.at <= nowMs - ttlMs_) return nullptr;
    return &it->second->second;
  }

  void Set(const std::string& key, V value) {
    Erase(key);
    const int64_t cutoff = value.at - ttlMs_;
    order_.emplace_back(key, std::move(value));
    index_[key] = std::prev(order_.end());
    while (!order_.empty() && (order_.front().second.at <= cutoff || order_.size() > maxEntries_)) {
      index_.erase(order_.front().first);
      order_.pop_front();
    }
  }

  void Erase(const std::string& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return;
    order_.erase(it->second);
    index_.erase(it);
  }

 private:
  using Entry = std::pair<std::string, V>;
  int64_t ttlMs_;
  size_t maxEntries_;
  std::list<Entry> order_;
  std::unordered_map<std::string, typename std::list<Entry>::iterator> index_;
};

// Nonces of accepted tokens, kept as long as a token carrying one could still pass the time
// window. Full of live nonces, it refuses new ones rather than forget any (fail closed).
class ReplayCache {
 public:
  ReplayCache(int64_t retainMs, size_t maxEntries) : retainMs_(retainMs), maxEntries_(maxEntries) {}
  NonceCheck Remember(const Nonce& nonce, int64_t nowMs);
  size_t Size() const { return until_.size(); }

 private:
  void Sweep(int64_t nowMs);
  int64_t retainMs_;
  size_t maxEntries_;
  std::unordered_map<std::string, int64_t> until_;
  std::deque<std::pair<int64_t, std::string>> order_;
};

class WarmHandshakes {
 public:
  explicit WarmHandshakes(const WarmSettings& settings);

  // Decides one queued handshake packet if everything it needs is known; otherwise `handled` is
  // false and the packet belongs to JS.
  WarmVerdict Handle(const uint8_t* data, size_t length, int hook, uint32_t mark, int64_t nowMs);
  void AddTiming(PacketKind kind, uint64_t decideNs, uint64_t verdictNs);

  // Taught by JS. A new local identity voids every pair key, so peers, servers and decisions go too.
  void SetLocal(const Bytes& chainSection, const Digest& digest);
  void LearnServer(const std::string& endpoint, const Digest& digest, const PairKey& key);
  void ForgetServer(const std::string& endpoint);
  // `asServer`: verified for the server's purpose (from a SYN-ACK), else the client's (from a SYN);
  // a chain is only taken for the purpose it was verified for (the EKU checks differ).
  void RememberPeer(const Bytes& chainSection, bool asServer, const Digest& digest, uint32_t ref, int64_t validUntilMs,
                    const PairKey& key);
  void RememberDecision(Direction direction, uint32_t peerRef, int family, const uint8_t* address, uint16_t port, bool allow,
                        uint32_t decisionRef);
  void ForgetPeers();
  void ForgetDecisions();

  // Shared per-connection state, for both paths.
  NonceCheck RememberNonce(const Nonce& nonce, int64_t nowMs) { return replays_.Remember(nonce, nowMs); }
  const PendingOut* FindPendingOut(const Tuple& t, int64_t nowMs) { return pendingOut_.Find(t.Key(), nowMs); }
  void SetPendingOut(const Tuple& t, PendingOut value) { pendingOut_.Set(t.Key(), std::move(value)); }
  void ErasePendingOut(const Tuple& t) { pendingOut_.Erase(t.Key()); }
  const PendingIn* FindPendingIn(const Tuple& t, int64_t nowMs) { return pendingIn_.Find(t.Key(), nowMs); }
  void SetPendingIn(const Tuple& t, PendingIn value) {
    value.localDigest = localDigest_;
    pendingIn_.Set(t.Key(), std::move(value));
  }
  // Whether our SYN-ACK may answer by MAC: a key derived against a certificate we have rotated away
  // from would not verify under the certificate the SYN-ACK carries, so it answers with a signature.
  bool AnswerByMac(const PendingIn& p) const { return p.mac && p.localDigest == localDigest_; }

  std::vector<FlowEvent> TakeFlows();
  const WarmCounters& Counters() const { return counters_; }
  size_t Peers() const { return peers_.size(); }
  size_t Servers() const { return servers_.size(); }
  size_t Decisions() const { return decisions_.size(); }
  size_t ReplaySize() const { return replays_.Size(); }

  static std::string Endpoint(int family, const uint8_t* address, uint16_t port);

 private:
  struct Server {
    Digest digest;
    PairKey key;
  };
  struct Peer {
    Digest digest;
    uint32_t ref;
    int64_t validUntilMs;
    PairKey key;
  };
  struct Decision {
    bool allow;
    uint32_t ref;
  };
  // A MAC token as it arrives, checked for shape only; views into the token bytes.
  struct MacToken {
    const uint8_t* nonce = nullptr;
    int64_t timestampMs = 0;
    const uint8_t* echoNonce = nullptr;
    std::string peerKey;  // purpose ('c' client, 's' server), then the certificate section as sent
    const uint8_t* keyId = nullptr;
    size_t signedLength = 0;
    const uint8_t* mac = nullptr;
  };

  bool OurSyn(WarmVerdict& out, const Bytes& packet, const TcpView& v, uint32_t mark, int64_t nowMs);
  bool PeerSyn(WarmVerdict& out, const Bytes& packet, const TcpView& v, uint32_t mark, int64_t nowMs);
  bool OurSynAck(WarmVerdict& out, const Bytes& packet, const TcpView& v, int64_t nowMs);
  bool PeerSynAck(WarmVerdict& out, const Bytes& packet, const TcpView& v, uint32_t mark, int64_t nowMs);

  bool ParseMacToken(const Bytes& token, bool synAck, MacToken& out) const;
  // The peer entry behind a checked MAC token: fresh, keyed to our current certificate, known,
  // and its proof right for this connection.
  const Peer* VerifyMacToken(const Bytes& token, const MacToken& parsed, const Tuple& tuple, int64_t nowMs) const;
  bool SpendNonce(const MacToken& parsed, int64_t nowMs, Nonce& nonce);
  const Decision* FindDecision(Direction direction, uint32_t peerRef, int family, const uint8_t* address, uint16_t port) const;
  Bytes BuildMacToken(bool synAck, const Nonce& nonce, int64_t nowMs, const Nonce* echo, const Digest& keyId, const PairKey& key,
                      const Tuple& tuple) const;
  bool NextNonce(Nonce& out);
  uint32_t WithMark(uint32_t current, uint32_t value) const { return (current & ~settings_.marks.mask) | value; }
  void Record(Direction direction, const Tuple& tuple, uint32_t peerRef, uint32_t decisionRef, int64_t nowMs);
  bool FlowRoom() const { return flows_.size() < kMaxFlows; }

  static constexpr size_t kMaxEntries = 4096;
  static constexpr size_t kMaxDecisions = 65536;
  static constexpr size_t kMaxFlows = 65536;

  WarmSettings settings_;
  bool hasLocal_ = false;
  Bytes localChain_;
  Digest localDigest_{};
  std::unordered_map<std::string, Server> servers_;
  std::unordered_map<std::string, Peer> peers_;
  std::unordered_map<std::string, Decision> decisions_;
  ReplayCache replays_;
  ExpiringTable<PendingOut> pendingOut_;
  ExpiringTable<PendingIn> pendingIn_;
  std::vector<FlowEvent> flows_;
  std::vector<uint8_t> noncePool_;
  size_t noncePoolAt_ = 0;
  WarmCounters counters_;
};

}  // namespace sigil
