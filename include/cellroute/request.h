// RequestView: what cellroute reads of an HTTP request. It owns nothing.
//
//   cellroute::Header headers[] = {{"Cookie", "_gitlab_session=cell-2-5cf8"},
//                                  {"Private-Token", token}};
//   cellroute::RequestView req;
//   req.method = "GET";
//   req.path = "/gitlab-org/gitlab";
//   req.headers = headers;
//   cellroute::Decision d = router.Route(req);
//
// Every field is a view into memory the caller keeps alive for the duration of the call that
// reads it. Header names compare case-insensitively. Cookies are read from every `Cookie`
// header (`a=1; b=2`) and, after those, from `cookies` (for callers that have them parsed
// already). `path` is the path only; the query string, if any, goes in `query`.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cellroute/export.h"

namespace cellroute {

struct Header {
  std::string_view name;
  std::string_view value;
};

struct RequestView {
  std::string_view method;
  std::string_view host;
  std::string_view path;
  std::string_view query;
  std::span<const Header> headers;
  std::span<const Header> cookies;

  // The value of the first header called `name` (case-insensitive), or an empty view and false.
  CELLROUTE_EXPORT bool FindHeader(std::string_view name, std::string_view* out) const noexcept;

  // Calls fn(name, value) for every header called `name` (case-insensitive), in order, until fn
  // returns true. Returns whether one did.
  template <typename Fn>
  bool AnyHeader(std::string_view name, Fn&& fn) const {
    for (const Header& h : headers) {
      if (EqualsIgnoreCase(h.name, name) && fn(h.value)) return true;
    }
    return false;
  }

  // Calls fn(name, value) for every cookie, in order, until fn returns true. Returns whether one
  // did. Never allocates: the Cookie headers are split in place.
  template <typename Fn>
  bool AnyCookie(Fn&& fn) const {
    for (const Header& h : headers) {
      if (!EqualsIgnoreCase(h.name, "cookie")) continue;
      // One pass per pair: up to ';', with the name ending at the first '='.
      const char* p = h.value.data();
      const char* const end = p + h.value.size();
      while (p < end) {
        const char* start = p;
        const char* eq = nullptr;
        for (; p < end && *p != ';'; ++p) {
          if (*p == '=' && eq == nullptr) eq = p;
        }
        if (eq != nullptr) {
          std::string_view name = Trim({start, static_cast<std::size_t>(eq - start)});
          if (!name.empty() &&
              fn(name, Trim({eq + 1, static_cast<std::size_t>(p - eq - 1)}))) {
            return true;
          }
        }
        ++p;  // past the ';'
      }
    }
    for (const Header& c : cookies) {
      if (fn(c.name, c.value)) return true;
    }
    return false;
  }

  static bool EqualsIgnoreCase(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      char x = a[i], y = b[i];
      if (x == y) continue;
      if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
      if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
      if (x != y) return false;
    }
    return true;
  }
  // Without the spaces and tabs around it.
  static std::string_view Trim(std::string_view s) noexcept {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
  }
};

// An owning request for callers that build one (tools, bindings, tests):
//
//   cellroute::Request r;
//   r.SetTarget("/api/v4/projects?page=2");
//   r.AddHeader("Private-Token", token);
//   router.Route(r.view());
//
// view() stays valid until the Request is changed or destroyed.
class CELLROUTE_EXPORT Request {
 public:
  std::string method = "GET";
  std::string host;
  std::string path = "/";
  std::string query;

  // Splits "/path?query" into path and query.
  void SetTarget(std::string_view target);
  void AddHeader(std::string name, std::string value);
  void AddCookie(std::string name, std::string value);
  RequestView view() const noexcept;

 private:
  static void Rebuild(const std::vector<std::pair<std::string, std::string>>& from,
                      std::vector<Header>* to);
  std::vector<std::pair<std::string, std::string>> header_storage_, cookie_storage_;
  std::vector<Header> headers_, cookies_;
};

}  // namespace cellroute
