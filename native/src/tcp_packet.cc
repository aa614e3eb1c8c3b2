#include "tcp_packet.h"

#include <cstring>

namespace sigil {
namespace {

uint16_t Get16(const Bytes& b, size_t at) { return static_cast<uint16_t>((b[at] << 8) | b[at + 1]); }
uint32_t Get32(const Bytes& b, size_t at) {
  return (static_cast<uint32_t>(b[at]) << 24) | (static_cast<uint32_t>(b[at + 1]) << 16) |
         (static_cast<uint32_t>(b[at + 2]) << 8) | b[at + 3];
}
void Put16(Bytes& b, size_t at, uint16_t v) {
  b[at] = static_cast<uint8_t>(v >> 8);
  b[at + 1] = static_cast<uint8_t>(v & 0xff);
}

uint32_t SumWords(const uint8_t* data, size_t len, uint32_t sum) {
  for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint32_t>((data[i] << 8) | data[i + 1]);
  if (len & 1) sum += static_cast<uint32_t>(data[len - 1] << 8);
  return sum;
}

uint16_t Fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum & 0xffff);
}

// Walks the IPv6 extension headers the kernel may hand us before TCP. Fragments are refused: a
// handshake segment is never legitimately fragmented and a fragment has no complete TCP header.
size_t Ipv6TcpOffset(const Bytes& p) {
  uint8_t next = p[6];
  size_t off = 40;
  for (int hops = 0; hops < 8; ++hops) {
    if (next == 6) return off;
    if (next == 44) throw PacketError("IPv6 fragment: handshake segments must not be fragmented");
    if (next != 0 && next != 43 && next != 60) {
      throw PacketError("IPv6 next header " + std::to_string(next) + " is not TCP");
    }
    if (off + 8 > p.size()) throw PacketError("IPv6 extension header truncated");
    next = p[off];
    off += (static_cast<size_t>(p[off + 1]) + 1) * 8;
  }
  throw PacketError("too many IPv6 extension headers");
}

}  // namespace

TcpView ParseTcp(const Bytes& p, uint16_t exid) {
  TcpView v;
  if (p.empty()) throw PacketError("empty packet");
  const int version = p[0] >> 4;
  size_t ipTotal = 0;
  if (version == 4) {
    if (p.size() < 20) throw PacketError("IPv4 header truncated");
    v.family = 4;
    v.ipHeaderLength = static_cast<size_t>(p[0] & 0x0f) * 4;
    if (v.ipHeaderLength < 20 || v.ipHeaderLength > p.size()) throw PacketError("IPv4 header length invalid");
    ipTotal = Get16(p, 2);
    if (p[9] != 6) throw PacketError("IPv4 protocol " + std::to_string(p[9]) + " is not TCP");
    if ((Get16(p, 6) & 0x3fff) != 0) throw PacketError("IPv4 fragment: handshake segments must not be fragmented");
    std::memcpy(v.src, &p[12], 4);
    std::memcpy(v.dst, &p[16], 4);
  } else if (version == 6) {
    if (p.size() < 40) throw PacketError("IPv6 header truncated");
    v.family = 6;
    ipTotal = 40 + static_cast<size_t>(Get16(p, 4));
    v.ipHeaderLength = Ipv6TcpOffset(p);
    std::memcpy(v.src, &p[8], 16);
    std::memcpy(v.dst, &p[24], 16);
  } else {
    throw PacketError("IP version " + std::to_string(version) + " unsupported");
  }
  if (ipTotal > p.size() || ipTotal < v.ipHeaderLength + 20) throw PacketError("IP length field invalid");
  v.tcpOffset = v.ipHeaderLength;
  const size_t t = v.tcpOffset;
  v.tcpHeaderLength = static_cast<size_t>(p[t + 12] >> 4) * 4;
  if (v.tcpHeaderLength < 20 || t + v.tcpHeaderLength > ipTotal) throw PacketError("TCP data offset invalid");
  v.srcPort = Get16(p, t);
  v.dstPort = Get16(p, t + 2);
  v.seq = Get32(p, t + 4);
  v.ack = Get32(p, t + 8);
  v.flags = p[t + 13];
  v.payloadOffset = t + v.tcpHeaderLength;
  v.payloadLength = ipTotal - v.payloadOffset;

  for (size_t i = t + 20; i < t + v.tcpHeaderLength;) {
    const uint8_t kind = p[i];
    if (kind == 0) break;
    if (kind == 1) {
      ++i;
      continue;
    }
    if (i + 1 >= t + v.tcpHeaderLength) throw PacketError("TCP option truncated");
    const size_t len = p[i + 1];
    if (len < 2 || i + len > t + v.tcpHeaderLength) throw PacketError("TCP option length invalid");
    if (kind == kTokenOptionKind && len >= 4 && Get16(p, i + 2) == exid) {
      if (v.tokenOption) throw PacketError("token option present twice");
      v.tokenOption = std::make_pair(i, len);
    }
    i += len;
  }
  return v;
}

void FixChecksums(Bytes& p, const TcpView& v) {
  const size_t tcpLength = p.size() - v.tcpOffset;
  if (v.family == 4) {
    p[10] = p[11] = 0;
    Put16(p, 10, Fold(SumWords(p.data(), v.ipHeaderLength, 0)));
  }
  p[v.tcpOffset + 16] = p[v.tcpOffset + 17] = 0;
  uint32_t sum = 0;
  const size_t addrLen = v.family == 4 ? 4 : 16;
  sum = SumWords(v.src, addrLen, sum);
  sum = SumWords(v.dst, addrLen, sum);
  sum += 6;
  sum += static_cast<uint32_t>(tcpLength & 0xffff) + static_cast<uint32_t>(tcpLength >> 16);
  sum = SumWords(p.data() + v.tcpOffset, tcpLength, sum);
  Put16(p, v.tcpOffset + 16, Fold(sum));
}

namespace {

// Writes the IP length fields for a packet whose TCP segment now ends at p.size(), then checksums.
void Finish(Bytes& p, TcpView v) {
  if (p.size() > 0xffff) throw PacketError("packet would exceed 65535 bytes");
  if (v.family == 4) {
    Put16(p, 2, static_cast<uint16_t>(p.size()));
  } else {
    Put16(p, 4, static_cast<uint16_t>(p.size() - 40));
  }
  FixChecksums(p, v);
}

}  // namespace

Bytes InsertToken(const Bytes& packet, const Bytes& token, uint16_t exid) {
  const TcpView v = ParseTcp(packet, exid);
  if (v.tokenOption) throw PacketError("segment already carries a token option");
  if (v.payloadLength != 0) throw PacketError("segment already carries payload; a token needs an empty SYN/SYN-ACK");
  if (v.tcpHeaderLength + kTokenOptionLength > 60) throw PacketError("no room for the token option (TCP options full)");
  if (token.empty()) throw PacketError("empty token");

  Bytes out;
  out.reserve(v.payloadOffset + kTokenOptionLength + token.size());
  // IP header(s) and the fixed 20-byte TCP header, then our option first (4 bytes, so the original
  // options keep their 4-byte alignment), then the original options, then the token.
  out.insert(out.end(), packet.begin(), packet.begin() + static_cast<long>(v.tcpOffset + 20));
  out.push_back(kTokenOptionKind);
  out.push_back(kTokenOptionLength);
  out.push_back(static_cast<uint8_t>(exid >> 8));
  out.push_back(static_cast<uint8_t>(exid & 0xff));
  out.insert(out.end(), packet.begin() + static_cast<long>(v.tcpOffset + 20),
             packet.begin() + static_cast<long>(v.payloadOffset));
  out.insert(out.end(), token.begin(), token.end());
  const size_t newHeader = v.tcpHeaderLength + kTokenOptionLength;
  out[v.tcpOffset + 12] = static_cast<uint8_t>(((newHeader / 4) << 4) | (out[v.tcpOffset + 12] & 0x0f));
  Finish(out, v);
  return out;
}

std::optional<std::pair<Bytes, Bytes>> ExtractToken(const Bytes& packet, uint16_t exid) {
  const TcpView v = ParseTcp(packet, exid);
  if (!v.tokenOption) return std::nullopt;
  const auto [at, len] = *v.tokenOption;
  Bytes token(packet.begin() + static_cast<long>(v.payloadOffset),
              packet.begin() + static_cast<long>(v.payloadOffset + v.payloadLength));

  Bytes out(packet.begin(), packet.begin() + static_cast<long>(at));
  out.insert(out.end(), packet.begin() + static_cast<long>(at + len), packet.begin() + static_cast<long>(v.payloadOffset));
  // Keep the header a multiple of 4 bytes when a peer used an unaligned option length.
  size_t header = v.tcpHeaderLength - len;
  while (header % 4 != 0) {
    out.push_back(1);
    ++header;
  }
  out[v.tcpOffset + 12] = static_cast<uint8_t>(((header / 4) << 4) | (out[v.tcpOffset + 12] & 0x0f));
  Finish(out, v);
  return std::make_pair(std::move(out), std::move(token));
}

Bytes RewriteAsReset(const Bytes& packet) {
  const TcpView v = ParseTcp(packet, 0);
  Bytes out(packet.begin(), packet.begin() + static_cast<long>(v.tcpOffset + 20));
  const size_t t = v.tcpOffset;
  out[t + 12] = 5 << 4;
  out[t + 13] = 0x14;  // RST | ACK
  out[t + 14] = out[t + 15] = 0;  // window
  out[t + 18] = out[t + 19] = 0;  // urgent pointer
  Finish(out, v);
  return out;
}

}  // namespace sigil
