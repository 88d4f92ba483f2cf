// Small text helpers shared by the loaders: reading a file, turning a byte offset into
// line:column, and naming a location the way every cellroute error does.
#pragma once

#include <cstddef>
#include <cstdint>
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
        if (Equal(names_[id], name)) return static_cast<int>(id);
      }
      return -1;
    }
    return FindHashed(b, name);
  }
  bool Contains(std::string_view name) const noexcept { return Find(name) >= 0; }
  std::size_t size() const noexcept { return names_.size(); }

 private:
  static constexpr std::size_t kLengths = 256;  // longer names are compared one by one
  static constexpr std::size_t kLinear = 4;     // up to this many names of a length: compared
  struct Bucket {
    std::vector<std::uint32_t> ids;
    std::vector<std::uint32_t> slots;  // id + 1, 0 empty; when ids exceed kLinear
    std::size_t mask = 0;
  };
  bool Equal(const std::string& stored, std::string_view name) const noexcept {
    if (stored.size() != name.size()) return false;
    if (!ignore_case_) return name == stored;
    for (std::size_t i = 0; i < name.size(); ++i) {
      if (AsciiLower(name[i]) != stored[i]) return false;
    }
    return true;
  }
  std::uint64_t Hash(std::string_view name) const noexcept;
  int FindHashed(const Bucket& b, std::string_view name) const noexcept;
  int FindLong(std::string_view name) const noexcept;

  bool ignore_case_;
  std::vector<std::string> names_;  // lower case when ignoring case
  std::unordered_map<std::string, std::uint32_t> ids_;  // for Add
  std::vector<Bucket> by_length_;
  std::uint64_t lengths_[kLengths / 64] = {};  // bit n: some name has n bytes
  std::vector<std::uint32_t> long_;
};

}  // namespace cellroute::internal
