// Small text helpers shared by the loaders: reading a file, turning a byte offset into
// line:column, and naming a location the way every cellroute error does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cellroute/status.h"

namespace cellroute::internal {

// The whole file, or kUnavailable naming the path and the OS error.
Result<std::string> ReadFile(const std::string& path);

struct LineColumn {
  std::size_t line = 1;
  std::size_t column = 1;
};
// 1-based line and column of byte `offset` in `text` (columns count bytes).
LineColumn LocateOffset(std::string_view text, std::size_t offset) noexcept;

// "source:line:column"
std::string FormatLocation(std::string_view source, LineColumn where);

constexpr char AsciiLower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string ToLower(std::string_view s);

// Copies and comparisons of the short strings routing moves (variable names, captured values,
// literal runs of a regex, cell addresses), inline: 4 to 16 bytes (copies: 4 to 32) as two
// overlapping words (the first and the last), shorter ones byte by byte, with no call into the
// C library; longer ones go to memcpy/memcmp.
template <typename Word>
[[gnu::always_inline]] inline void CopyEnds(char* to, const char* from, std::size_t n) noexcept {
  Word first, last;
  std::memcpy(&first, from, sizeof(Word));
  std::memcpy(&last, from + n - sizeof(Word), sizeof(Word));
  std::memcpy(to, &first, sizeof(Word));
  std::memcpy(to + n - sizeof(Word), &last, sizeof(Word));
}
template <typename Word>
[[gnu::always_inline]] inline bool EqualEnds(const char* a, const char* b, std::size_t n) noexcept {
  Word a0, a1, b0, b1;
  std::memcpy(&a0, a, sizeof(Word));
  std::memcpy(&a1, a + n - sizeof(Word), sizeof(Word));
  std::memcpy(&b0, b, sizeof(Word));
  std::memcpy(&b1, b + n - sizeof(Word), sizeof(Word));
  return ((a0 ^ b0) | (a1 ^ b1)) == 0;
}
struct Bytes16 {
  std::uint64_t w[2];
};
[[gnu::always_inline]] inline void CopyBytes(char* to, const char* from, std::size_t n) noexcept {
  if (n >= 8 && n <= 16) return CopyEnds<std::uint64_t>(to, from, n);
  if (n >= 4 && n < 8) return CopyEnds<std::uint32_t>(to, from, n);
  if (n > 16 && n <= 32) return CopyEnds<Bytes16>(to, from, n);
  if (n > 32) {
    std::memcpy(to, from, n);
    return;
  }
  for (std::size_t i = 0; i < n; ++i) to[i] = from[i];
}
[[gnu::always_inline]] inline bool EqualBytes(const char* a, const char* b,
                                              std::size_t n) noexcept {
  if (n >= 8 && n <= 16) return EqualEnds<std::uint64_t>(a, b, n);
  if (n >= 4 && n < 8) return EqualEnds<std::uint32_t>(a, b, n);
  if (n > 16) return std::memcmp(a, b, n) == 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

// The fold mask of a lower-case name: 0x20 where it has a letter, 0 elsewhere.
std::string FoldMask(std::string_view lower);

// Whether `name` equals `lower` (lower case, with its FoldMask `fold`; all of name's size)
// ignoring ASCII case, eight bytes a test (four for names of four to seven bytes, as two
// overlapping words): OR-ing in 0x20 where the stored byte is a letter lowers exactly the
// bytes that may differ in case, and leaves every other byte to compare as it is.
[[gnu::always_inline]] inline bool EqualFolded(const char* lower, const char* fold,
                                               std::string_view name) noexcept {
  const std::size_t n = name.size();
  auto word = [&]<typename Word>(Word, std::size_t i) {
    Word t, f, l;
    std::memcpy(&t, name.data() + i, sizeof(Word));
    std::memcpy(&f, fold + i, sizeof(Word));
    std::memcpy(&l, lower + i, sizeof(Word));
    return (t | f) == l;
  };
  if (n >= 8) {
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      if (!word(std::uint64_t{}, i)) return false;
    }
    return i == n || word(std::uint64_t{}, n - 8);
  }
  if (n >= 4) return word(std::uint32_t{}, 0) && word(std::uint32_t{}, n - 4);
  for (std::size_t i = 0; i < n; ++i) {
    if ((name[i] | fold[i]) != lower[i]) return false;
  }
  return true;
}

// A name compared ignoring ASCII case (a header name a matcher looks for).
class FoldedName {
 public:
  FoldedName() = default;
  explicit FoldedName(std::string_view name) : lower_(ToLower(name)), fold_(FoldMask(lower_)) {}
  const std::string& lower() const noexcept { return lower_; }
  bool Equals(std::string_view name) const noexcept {
    return name.size() == lower_.size() && EqualFolded(lower_.data(), fold_.data(), name);
  }

 private:
  std::string lower_, fold_;
};

// Whether `needle` (not empty) occurs in `text`: candidates found sixteen positions at a time by
// the needle's first and last bytes, then compared.
bool ContainsBytes(std::string_view text, std::string_view needle) noexcept;

// Names looked up by the text of a request (header names, cookie names, reserved words, path
// prefixes) on the routing path: a length filter, then a few direct comparisons, or a probe of
// a small open-addressing table for a length that many names share. Lookups neither allocate
// nor hash the common case, and limit no name's length.
class NameTable {
 public:
  explicit NameTable(bool ignore_case = true) : ignore_case_(ignore_case) {}

  // The name's id (0, 1, ... in order of first addition; a name added again keeps its id).
  std::size_t Add(std::string_view name);
  // Builds the lookup structure: after the last Add, before the first Find.
  void Seal();
  // The id of `name`, or -1.
  [[gnu::always_inline]] int Find(std::string_view name) const noexcept {
    const std::size_t n = name.size();
    if (n >= kLengths) return FindLong(name);
    if (!(lengths_[n >> 6] >> (n & 63) & 1)) return -1;  // most names fail here
    const Bucket& b = by_length_[n];
    if (b.slots.empty()) {
      for (std::uint32_t id : b.ids) {
        if (Equal(id, name)) return static_cast<int>(id);
      }
      return -1;
    }
    return FindHashed(b, name);
  }
  bool Contains(std::string_view name) const noexcept { return Find(name) >= 0; }
  std::size_t size() const noexcept { return names_.size(); }
  // The name with id `id` (lower case when ignoring case).
  const std::string& name(std::size_t id) const noexcept { return names_[id]; }

 private:
  static constexpr std::size_t kLengths = 256;  // longer names are compared one by one
  static constexpr std::size_t kLinear = 4;     // up to this many names of a length: compared
  static constexpr std::uint64_t kTagMask = 0xFFFFFFFF00000000ULL;  // of a hashed slot
  struct Bucket {
    std::vector<std::uint32_t> ids;
    // When ids exceed kLinear: id + 1 in the low half (0: empty), the name's hash's high half
    // in the high half, compared before the name (every name of a bucket has its length).
    std::vector<std::uint64_t> slots;
    std::size_t mask = 0;
  };
  [[gnu::always_inline]] bool Equal(std::uint32_t id, std::string_view name) const noexcept {
    const std::string& stored = names_[id];
    const std::size_t n = name.size();
    if (stored.size() != n) return false;
    if (!ignore_case_) return EqualBytes(stored.data(), name.data(), n);
    return EqualFolded(stored.data(), folds_[id].data(), name);
  }
  std::uint64_t Hash(std::string_view name) const noexcept;
  int FindHashed(const Bucket& b, std::string_view name) const noexcept;
  int FindLong(std::string_view name) const noexcept;

  bool ignore_case_;
  std::vector<std::string> names_;  // lower case when ignoring case
  std::vector<std::string> folds_;  // by id when ignoring case: 0x20 where the name has a letter
  std::unordered_map<std::string, std::uint32_t> ids_;  // for Add
  std::vector<Bucket> by_length_;
  std::uint64_t lengths_[kLengths / 64] = {};  // bit n: some name has n bytes
  std::vector<std::uint32_t> long_;
};

}  // namespace cellroute::internal
