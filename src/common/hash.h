// A fast 64-bit hash for table keys (claim type + value). Not for adversarial collision
// resistance on its own: the trie compares whole keys, so a collision costs time, never a
// wrong answer.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace cellroute::internal {

inline std::uint64_t Mix(std::uint64_t a, std::uint64_t b) noexcept {
  __extension__ using U128 = unsigned __int128;
  U128 r = static_cast<U128>(a) * b;
  return static_cast<std::uint64_t>(r) ^ static_cast<std::uint64_t>(r >> 64);
}

inline std::uint64_t Load64(const char* p) noexcept {
  std::uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
}
inline std::uint64_t Load32(const char* p) noexcept {
  std::uint32_t w;
  std::memcpy(&w, p, 4);
  return w;
}

// The last 1 to 7 bytes (or the last 8, overlapping what came before) in whole loads: copying
// them byte by byte into a word and reading it back stalls on store forwarding.
inline std::uint64_t Tail(const char* p, std::size_t n, std::size_t total) noexcept {
  if (total >= 8) return Load64(p + n - 8);
  if (n >= 4) return (Load32(p) << 32) | Load32(p + n - 4);
  if (n == 0) return 0;
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (std::uint64_t{u[0]} << 16) | (std::uint64_t{u[n >> 1]} << 8) | u[n - 1];
}

// Sixteen bytes per multiply, and two multiplies in all for a key of up to 16 bytes (the
// usual claim): a table lookup hashes before its first load, so the chain of multiplies is on
// every lookup's critical path. The type and the length are mixed in, so that "ab" as a route
// and as a project differ, as do keys that pad to the same words.
inline std::uint64_t HashKey(std::uint8_t type, std::string_view key) noexcept {
  constexpr std::uint64_t k0 = 0xa0761d6478bd642fULL, k1 = 0xe7037ed1a0b428dbULL,
                          k2 = 0x8ebc6af09c88c6e3ULL;
  const char* p = key.data();
  std::size_t n = key.size();
  std::uint64_t seed = k0 ^ (std::uint64_t{type} << 56);
  std::uint64_t a = 0, b = 0;
  if (n <= 16) {
    if (n >= 8) {
      a = Load64(p);
      b = Load64(p + n - 8);
    } else {
      a = Tail(p, n, n);
    }
  } else {
    for (; n > 16; p += 16, n -= 16) seed = Mix(Load64(p) ^ k1, Load64(p + 8) ^ seed);
    a = Load64(p + n - 16);
    b = Load64(p + n - 8);
  }
  return Mix(k1 ^ key.size(), Mix(a ^ k2, b ^ seed));
}

// Equal bytes, eight at a time: table keys are short, and a call to memcmp costs more than
// comparing them.
inline bool SameBytes(const char* a, const char* b, std::size_t n) noexcept {
  if (n < 8) return Tail(a, n, n) == Tail(b, n, n);
  for (std::size_t i = 0; i + 8 < n; i += 8) {
    if (Load64(a + i) != Load64(b + i)) return false;
  }
  return Load64(a + n - 8) == Load64(b + n - 8);
}

}  // namespace cellroute::internal
