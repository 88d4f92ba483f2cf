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

inline std::uint64_t HashKey(std::uint8_t type, std::string_view key) noexcept {
  constexpr std::uint64_t k0 = 0xa0761d6478bd642fULL, k1 = 0xe7037ed1a0b428dbULL,
                          k2 = 0x8ebc6af09c88c6e3ULL, k3 = 0x589965cc75374cc3ULL;
  std::uint64_t h = Mix(k0 ^ type, k1 ^ key.size());
  const char* p = key.data();
  std::size_t n = key.size();
  while (n >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    h = Mix(h ^ w, k2);
    p += 8;
    n -= 8;
  }
  std::uint64_t tail = 0;
  if (n > 0) std::memcpy(&tail, p, n);  // an empty key may have no data pointer
  h = Mix(h ^ tail, k3);
  return Mix(h ^ (h >> 29), k1);
}

}  // namespace cellroute::internal
