// Small text helpers shared by the loaders: reading a file, turning a byte offset into
// line:column, and naming a location the way every cellroute error does.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
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

// Words matched case-insensitively, e.g. the top-level paths that are never a namespace.
// Lookups neither allocate nor limit a word's length.
class WordSet {
 public:
  void Add(std::string_view word);  // then Seal() before the first Contains
  void Seal();
  bool Contains(std::string_view word) const noexcept;

 private:
  std::vector<std::string> words_;  // lower case, sorted once sealed
};

}  // namespace cellroute::internal
