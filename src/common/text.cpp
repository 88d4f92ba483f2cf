#include "common/text.h"

#include <algorithm>
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
  for (char& c : out) c = AsciiLower(c);
  return out;
}

void WordSet::Add(std::string_view word) { words_.push_back(ToLower(word)); }

void WordSet::Seal() {
  std::sort(words_.begin(), words_.end());
  words_.erase(std::unique(words_.begin(), words_.end()), words_.end());
}

bool WordSet::Contains(std::string_view word) const noexcept {
  // The stored words are lower case already, so lowering both sides compares `word` without
  // copying it.
  auto less = [](std::string_view a, std::string_view b) {
    return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
      return AsciiLower(x) < AsciiLower(y);
    });
  };
  auto it = std::lower_bound(words_.begin(), words_.end(), word,
                             [&](const std::string& w, std::string_view k) { return less(w, k); });
  return it != words_.end() && !less(word, *it);
}

}  // namespace cellroute::internal
