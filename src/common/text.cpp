#include "common/text.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

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
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  }
  return out;
}

}  // namespace cellroute::internal
