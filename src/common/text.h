// Small text helpers shared by the loaders: reading a file, turning a byte offset into
// line:column, and naming a location the way every cellroute error does.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

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

std::string ToLower(std::string_view s);

}  // namespace cellroute::internal
