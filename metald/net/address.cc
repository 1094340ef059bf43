#include "metald/net/address.h"

#include <arpa/inet.h>

#include <cstdio>

namespace metald::net {
namespace {

base::Result<int> ParsePrefixLen(std::string_view text, int min, int max) {
  if (text.empty() || text.size() > 3) return base::InvalidArgumentError("Bad prefix length");
  int n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return base::InvalidArgumentError("Bad prefix length");
    n = n * 10 + (c - '0');
  }
  if (text.size() > 1 && text[0] == '0') return base::InvalidArgumentError("Bad prefix length");
  if (n < min || n > max) {
    return base::InvalidArgumentError("Prefix length must be between " + std::to_string(min) +
                                      " and " + std::to_string(max));
  }
  return n;
}

// murmur3's 64-bit finaliser: FNV-1a alone leaves the low bits weakly mixed, and ids that differ
// only in their last characters must still get unrelated keys and MACs.
uint64_t Mix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

}  // namespace

std::string Ipv4Cidr::ToString() const {
  return FormatIpv4(network) + "/" + std::to_string(prefix_len);
}

base::Result<uint32_t> ParseIpv4(std::string_view text) {
  uint32_t addr = 0;
  int octets = 0;
  size_t i = 0;
  while (octets < 4) {
    size_t start = i;
    uint32_t v = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9' && i - start < 3) {
      v = v * 10 + static_cast<uint32_t>(text[i] - '0');
      ++i;
    }
    if (i == start || v > 255 || (i - start > 1 && text[start] == '0')) break;
    addr = (addr << 8) | v;
    ++octets;
    if (octets < 4) {
      if (i >= text.size() || text[i] != '.') break;
      ++i;
    }
  }
  if (octets != 4 || i != text.size()) {
    return base::InvalidArgumentError("Not an IPv4 address: \"" + std::string(text) + "\"");
  }
  return addr;
}

std::string FormatIpv4(uint32_t a) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%u.%u.%u.%u", a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff,
                a & 0xff);
  return buf;
}

base::Result<Ipv4Cidr> ParseIpv4Cidr(std::string_view text) {
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) {
    return base::InvalidArgumentError("IPv4 CIDR needs a prefix length: \"" + std::string(text) +
                                      "\"");
  }
  ASSIGN_OR_RETURN(uint32_t addr, ParseIpv4(text.substr(0, slash)));
  auto len = ParsePrefixLen(text.substr(slash + 1), 8, 30);
  if (!len.ok()) return len.status().WithContext("IPv4 CIDR \"" + std::string(text) + "\"");
  uint32_t mask = ~uint32_t{0} << (32 - *len);
  if ((addr & ~mask) != 0) {
    return base::InvalidArgumentError("IPv4 CIDR \"" + std::string(text) +
                                      "\" has host bits set; did you mean " +
                                      FormatIpv4(addr & mask) + "/" + std::to_string(*len) + "?");
  }
  return Ipv4Cidr{addr, *len};
}

std::string Ipv6Prefix::AddressAt(uint64_t host_index) const {
  std::array<uint8_t, 16> b = bytes;
  for (int i = 15; i >= 8; --i) {
    b[i] |= static_cast<uint8_t>(host_index & 0xff);
    host_index >>= 8;
  }
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, b.data(), buf, sizeof(buf));
  return buf;
}

std::string Ipv6Prefix::ToString() const {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, bytes.data(), buf, sizeof(buf));
  return std::string(buf) + "/" + std::to_string(prefix_len);
}

base::Result<Ipv6Prefix> ParseIpv6Prefix(std::string_view text) {
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) {
    return base::InvalidArgumentError("IPv6 prefix needs a length: \"" + std::string(text) + "\"");
  }
  Ipv6Prefix p;
  std::string addr(text.substr(0, slash));
  if (inet_pton(AF_INET6, addr.c_str(), p.bytes.data()) != 1) {
    return base::InvalidArgumentError("Not an IPv6 prefix: \"" + std::string(text) + "\"");
  }
  auto len = ParsePrefixLen(text.substr(slash + 1), 48, 120);
  if (!len.ok()) return len.status().WithContext("IPv6 prefix \"" + std::string(text) + "\"");
  p.prefix_len = *len;
  for (int bit = p.prefix_len; bit < 128; ++bit) {
    if (p.bytes[bit / 8] & (0x80 >> (bit % 8))) {
      return base::InvalidArgumentError("IPv6 prefix \"" + std::string(text) +
                                        "\" has bits set past its length");
    }
  }
  return p;
}

uint64_t Fnv1a64(std::string_view data, uint64_t seed) {
  uint64_t h = seed;
  for (unsigned char c : data) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string NameKey(std::string_view vm_id) {
  uint64_t h = Mix(Fnv1a64(vm_id));
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return std::string(buf, kNameKeyLength);
}

std::string DeriveMac(std::string_view vm_id) {
  // A different seed so the MAC and the name key are independent hashes.
  uint64_t h = Mix(Fnv1a64(vm_id, 0x6d6574616c642d6dull));
  char buf[18];
  std::snprintf(buf, sizeof(buf), "02:%02x:%02x:%02x:%02x:%02x",
                static_cast<unsigned>((h >> 32) & 0xff), static_cast<unsigned>((h >> 24) & 0xff),
                static_cast<unsigned>((h >> 16) & 0xff), static_cast<unsigned>((h >> 8) & 0xff),
                static_cast<unsigned>(h & 0xff));
  return buf;
}

}  // namespace metald::net
