// TCP/IP packet surgery for the fast path: locate the TCP header of an IPv4 or IPv6 packet, add or
// remove the token option (TCP option 253, RFC 6994 experimental, with our 16-bit ExID) together
// with the token carried as the segment's payload, turn a segment into a RST, and keep every length
// and checksum right. Pure functions on byte vectors; no I/O, no Node types.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace sigil {

using Bytes = std::vector<uint8_t>;

constexpr uint8_t kTokenOptionKind = 253;
constexpr uint8_t kTokenOptionLength = 4;

// Malformed or unsupported input; the message names the field.
class PacketError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TcpView {
  int family = 0;             // 4 or 6
  size_t ipHeaderLength = 0;  // IPv4 header or IPv6 header plus extension headers
  size_t tcpOffset = 0;
  size_t tcpHeaderLength = 0;
  size_t payloadOffset = 0;
  size_t payloadLength = 0;
  uint8_t src[16] = {0};
  uint8_t dst[16] = {0};
  uint16_t srcPort = 0;
  uint16_t dstPort = 0;
  uint32_t seq = 0;
  uint32_t ack = 0;
  uint8_t flags = 0;
  // Offset (from packet start) and length of our token option, when present.
  std::optional<std::pair<size_t, size_t>> tokenOption;
};

// Parses the IP and TCP headers; throws PacketError for anything that is not a whole, unfragmented
// TCP segment. `exid` selects which RFC 6994 option counts as the token marker.
TcpView ParseTcp(const Bytes& packet, uint16_t exid);

// A copy of `packet` with the token option added and `token` as payload. The segment must carry
// no payload and no token yet, and have room for 4 more option bytes.
Bytes InsertToken(const Bytes& packet, const Bytes& token, uint16_t exid);

// Removes the token option and the payload; returns the stripped packet and the token, or nullopt
// when the segment carries no token option.
std::optional<std::pair<Bytes, Bytes>> ExtractToken(const Bytes& packet, uint16_t exid);

// The segment rewritten as RST|ACK with the same addresses, ports, sequence and acknowledgment
// numbers, no options and no payload. A SYN-ACK rewritten this way refuses the connection to the
// local client that sent the SYN.
Bytes RewriteAsReset(const Bytes& packet);

// Recomputes the IPv4 header checksum (IPv4 only) and the TCP checksum in place.
void FixChecksums(Bytes& packet, const TcpView& view);

}  // namespace sigil
