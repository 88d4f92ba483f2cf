#include "cellroute/request.h"

namespace cellroute {

namespace {
constexpr char Lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }
}  // namespace

bool RequestView::EqualsIgnoreCase(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

std::string_view RequestView::Trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool RequestView::FindHeader(std::string_view name, std::string_view* out) const noexcept {
  for (const Header& h : headers) {
    if (EqualsIgnoreCase(h.name, name)) {
      *out = h.value;
      return true;
    }
  }
  *out = {};
  return false;
}

}  // namespace cellroute
