// libFuzzer target for the native code that reads packets off the network: TCP/IP parsing and
// token option surgery (tcp_packet.cc) and the warm-handshake table's handling of a queued packet,
// MAC token parsing included (warm_handshake.cc). Input: one byte choosing the netfilter hook and
// mark, then the packet as NFQUEUE would hand it over. Beyond the sanitizers' checks, the surgery
// must hold its own invariants: a stripped packet parses without a token, and a token put back
// comes out byte for byte; a packet rewritten as a reset parses as one.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "tcp_packet.h"
#include "warm_handshake.h"

namespace {

using sigil::Bytes;

constexpr uint16_t kExid = 0x5347;
constexpr int64_t kNowMs = 1796400000000;
constexpr int kHookPreRouting = 0;
constexpr int kHookLocalOut = 3;
// The certificate section the table was taught (count 1, a 3-byte "certificate"), as a seed token carries.
const uint8_t kChain[] = {1, 0, 3, 'a', 'b', 'c'};

void Require(bool ok) {
  if (!ok) std::abort();
}

sigil::WarmHandshakes& Table() {
  static sigil::WarmHandshakes* table = [] {
    sigil::WarmSettings s;
    s.exid = kExid;
    s.windowMs = 10000;
    s.replayEntries = 4096;
    s.marks = {0x00f00000, 0x00100000, 0x00200000, 0x00300000, 0x00400000, 0x00500000};
    auto* t = new sigil::WarmHandshakes(s);
    sigil::Digest digest;
    digest.fill(0x11);
    sigil::PairKey key;
    key.fill(0x22);
    const Bytes chain(kChain, kChain + sizeof(kChain));
    t->SetLocal(chain, digest);
    t->RememberPeer(chain, false, digest, 1, kNowMs + 3600000, key);
    t->RememberPeer(chain, true, digest, 2, kNowMs + 3600000, key);
    const uint8_t client[4] = {198, 18, 0, 1};
    const uint8_t server[4] = {198, 18, 0, 2};
    t->RememberDecision(sigil::kIngress, 1, 4, client, 7000, true, 1);
    t->RememberDecision(sigil::kEgress, 2, 4, server, 7000, true, 2);
    t->LearnServer(sigil::WarmHandshakes::Endpoint(4, server, 7000), digest, key);
    return t;
  }();
  return *table;
}

void CheckSurgery(const Bytes& packet) {
  try {
    sigil::ParseTcp(packet, kExid);
  } catch (const sigil::PacketError&) {
    return;
  }
  try {
    const auto extracted = sigil::ExtractToken(packet, kExid);
    if (extracted) {
      const sigil::TcpView stripped = sigil::ParseTcp(extracted->first, kExid);
      Require(!stripped.tokenOption && stripped.payloadLength == 0);
      Bytes again;
      try {
        again = sigil::InsertToken(extracted->first, extracted->second, kExid);
      } catch (const sigil::PacketError&) {
        again.clear();  // no room for the option in the stripped header: refused, not mangled
      }
      if (!again.empty()) {
        const auto round = sigil::ExtractToken(again, kExid);
        Require(round && round->second == extracted->second && round->first == extracted->first);
      }
    }
  } catch (const sigil::PacketError&) {
  }
  try {
    const Bytes reset = sigil::RewriteAsReset(packet);
    Require((sigil::ParseTcp(reset, kExid).flags & 0x04) != 0);
  } catch (const sigil::PacketError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t selector = data[0];
  const Bytes packet(data + 1, data + size);
  CheckSurgery(packet);
  const int hook = (selector & 1) ? kHookLocalOut : kHookPreRouting;
  const uint32_t mark = static_cast<uint32_t>(selector >> 1) << 20 & 0x00f00000;
  Table().Handle(packet.data(), packet.size(), hook, mark, kNowMs + (selector >> 5) * 1000);
  Table().TakeFlows();
  return 0;
}
