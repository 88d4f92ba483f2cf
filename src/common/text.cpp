#include "common/text.h"

#include "common/hash.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

namespace cellroute::internal {

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Status::Unavailable(path + ": cannot open: " + std::strerror(errno));
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return Status::Unavailable(path + ": read error");
  return buf.str();
}

LineColumn LocateOffset(std::string_view text, std::size_t offset) noexcept {
  LineColumn lc;
  if (offset > text.size()) offset = text.size();
  for (std::size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++lc.line;
      lc.column = 1;
    } else {
      ++lc.column;
    }
  }
  return lc;
}

std::string FormatLocation(std::string_view source, LineColumn where) {
  std::string s(source);
  s += ':';
  s += std::to_string(where.line);
  s += ':';
  s += std::to_string(where.column);
  return s;
}

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = AsciiLower(c);
  return out;
}

std::string FoldMask(std::string_view lower) {
  std::string fold(lower.size(), '\0');
  for (std::size_t i = 0; i < lower.size(); ++i) {
    if (lower[i] >= 'a' && lower[i] <= 'z') fold[i] = 0x20;
  }
  return fold;
}

std::size_t NameTable::Add(std::string_view name) {
  std::string key = ignore_case_ ? ToLower(name) : std::string(name);
  auto [it, inserted] = ids_.try_emplace(key, static_cast<std::uint32_t>(names_.size()));
  if (inserted) {
    if (ignore_case_) folds_.push_back(FoldMask(key));
    names_.push_back(std::move(key));
  }
  return it->second;
}

void NameTable::Seal() {
  by_length_.assign(kLengths, Bucket());
  long_.clear();
  for (auto& word : lengths_) word = 0;
  for (std::size_t id = 0; id < names_.size(); ++id) {
    std::size_t n = names_[id].size();
    if (n < kLengths) {
      lengths_[n >> 6] |= 1ULL << (n & 63);
      by_length_[n].ids.push_back(static_cast<std::uint32_t>(id));
    } else {
      long_.push_back(static_cast<std::uint32_t>(id));
    }
  }
  for (Bucket& b : by_length_) {
    if (b.ids.size() <= kLinear) continue;
    std::size_t size = 8;
    while (size < b.ids.size() * 4) size *= 2;  // a quarter full: a miss probes about one slot
    b.slots.assign(size, 0);
    b.mask = size - 1;
    for (std::uint32_t id : b.ids) {
      const std::uint64_t h = Hash(names_[id]);
      std::size_t i = h & b.mask;
      while (b.slots[i] != 0) i = (i + 1) & b.mask;
      b.slots[i] = (h & kTagMask) | (std::uint64_t{id} + 1);
    }
  }
}

std::uint64_t NameTable::Hash(std::string_view name) const noexcept {
  // The length and the first and last eight bytes (fewer for a short name), read as whole
  // words: a bucket holds names of one length, which mostly differ there. With case ignored,
  // 0x20 is OR-ed into every byte, so names equal but for case hash alike; a collision only
  // costs a comparison.
  const std::size_t n = name.size();
  // Whole loads: a copy of a variable length is a call to memcpy.
  std::uint64_t head = n >= 8 ? Load64(name.data()) : Tail(name.data(), n, n);
  std::uint64_t tail = n >= 8 ? Load64(name.data() + n - 8) : 0;
  if (ignore_case_) {
    head |= 0x2020202020202020ULL;
    tail |= 0x2020202020202020ULL;
  }
  std::uint64_t h = (head ^ (tail * 0x9E3779B97F4A7C15ULL) ^ n) * 0xFF51AFD7ED558CCDULL;
  return h ^ (h >> 29);
}

int NameTable::FindLong(std::string_view name) const noexcept {
  for (std::uint32_t id : long_) {
    if (Equal(id, name)) return static_cast<int>(id);
  }
  return -1;
}

int NameTable::FindHashed(const Bucket& b, std::string_view name) const noexcept {
  const std::uint64_t h = Hash(name);
  for (std::size_t i = h & b.mask;; i = (i + 1) & b.mask) {
    const std::uint64_t slot = b.slots[i];
    if (slot == 0) return -1;
    const auto id = static_cast<std::uint32_t>(slot) - 1;
    if ((slot & kTagMask) == (h & kTagMask) && Equal(id, name)) return static_cast<int>(id);
  }
}

bool ContainsBytes(std::string_view text, std::string_view needle) noexcept {
  const std::size_t n = needle.size();
  if (n == 0 || n > text.size()) return n == 0;
  const std::size_t last = text.size() - n;  // the last position a match can start at
  const char* t = text.data();
  std::size_t pos = 0;
#ifdef __SSE2__
  const __m128i first = _mm_set1_epi8(needle[0]), final = _mm_set1_epi8(needle[n - 1]);
  for (; pos + 16 <= last + 1; pos += 16) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(t + pos));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(t + pos + n - 1));
    auto hits = static_cast<std::uint32_t>(
        _mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(a, first), _mm_cmpeq_epi8(b, final))));
    for (; hits != 0; hits &= hits - 1) {
      const std::size_t at = pos + static_cast<std::size_t>(std::countr_zero(hits));
      if (EqualBytes(t + at, needle.data(), n)) return true;
    }
  }
#endif
  for (; pos <= last; ++pos) {
    if (t[pos] == needle[0] && t[pos + n - 1] == needle[n - 1] &&
        EqualBytes(t + pos, needle.data(), n)) {
      return true;
    }
  }
  return false;
}

}  // namespace cellroute::internal
