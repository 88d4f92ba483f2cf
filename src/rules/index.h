// The prefilter that makes evaluation cost track the rules that could match rather than the
// rules there are. Each rule is filed under one "anchor": something cheap to check that the
// rule cannot match without (a header's presence, a cookie name, a literal prefix of the path).
// Per request, the path's prefixes and first segment and the Cookie headers (searched for the
// few anchored names, or split when there are many) give the rules whose anchors are present;
// header names are looked up only when evaluation reaches a header-anchored rule (ADR 0014).
// Only candidates are evaluated, in order, so first-match-wins is unchanged. Rules with no
// usable anchor are always candidates.
#pragma once

#include <bit>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cellroute/request.h"
#include "common/text.h"

namespace cellroute::internal {

struct Rule;
struct Regex;

// Where a request's Cookie headers are among its headers, noted in the one pass over them that
// also sizes the request (RequestScan::Bind), so that nothing looks for them by name again:
// the first 64 by bit, any further ones by a scan of what follows.
class CookieHeaders {
 public:
  static bool Is(const Header& h) noexcept {
    return h.name.size() == 6 && EqualFolded("cookie", "\x20\x20\x20\x20\x20\x20", h.name);
  }
  void Clear() noexcept {
    first_ = 0;
    beyond_ = false;
  }
  void Note(std::size_t header) noexcept {
    if (header < 64) {
      first_ |= std::uint64_t{1} << header;
    } else {
      beyond_ = true;
    }
  }
  // fn(value) for each Cookie header of `request` (the one noted), in order, until it says true.
  template <typename Fn>
  bool Any(const RequestView& request, Fn&& fn) const {
    for (std::uint64_t m = first_; m != 0; m &= m - 1) {
      if (fn(request.headers[static_cast<std::size_t>(std::countr_zero(m))].value)) return true;
    }
    if (!beyond_) return false;
    for (std::size_t i = 64; i < request.headers.size(); ++i) {
      if (Is(request.headers[i]) && fn(request.headers[i].value)) return true;
    }
    return false;
  }

 private:
  std::uint64_t first_ = 0;
  bool beyond_ = false;
};

// A request's cookies, split from its Cookie headers at most once per evaluation, on first use
// (the index and every cookie matcher read the same split; a request that an earlier rule
// decides is never split) when there are at most kMaxSplit; past that, each use splits them
// again with RequestView::AnyCookie.
class CookieList {
 public:
  static constexpr std::size_t kMaxSplit = 64;

  // The request whose cookies Any lists, its Cookie headers where `headers` says (which
  // must outlive this); nothing is split yet.
  void Bind(const RequestView& request, const CookieHeaders* headers) noexcept {
    request_ = &request;
    headers_ = headers;
    split_ = false;
  }
  // As RequestView::AnyCookie (false when unbound), splitting on the first call.
  template <typename Fn>
  bool Any(Fn&& fn) {
    if (!split_) Split();
    if (!complete_) return request_ != nullptr && request_->AnyCookie(fn);
    for (std::size_t i = 0; i < size_; ++i) {
      const Cookie& c = cookies_[i];
      if (fn(std::string_view(c.name, c.name_size), std::string_view(c.value, c.value_size))) {
        return true;
      }
    }
    return false;
  }

 private:
  const RequestView* request_ = nullptr;
  const CookieHeaders* headers_ = nullptr;
  std::size_t size_ = 0;
  bool split_ = false;
  bool complete_ = false;
  // The same cookies as RequestView::AnyCookie, in the same order, found with a vector scan
  // for ';' and '=' (16 bytes at a time) rather than byte by byte.
  void Split() noexcept {
    split_ = true;
    size_ = 0;
    complete_ = true;
    if (request_ == nullptr) return;
    if (headers_->Any(*request_, [&](std::string_view value) { return !SplitHeader(value); })) {
      complete_ = false;
      return;
    }
    for (const Header& c : request_->cookies) {
      if (!Push(c.name, c.value)) {
        complete_ = false;
        return;
      }
    }
  }
  bool Push(std::string_view name, std::string_view value) noexcept {
    if (size_ == kMaxSplit) return false;
    cookies_[size_++] = {name.data(), value.data(), static_cast<std::uint32_t>(name.size()),
                         static_cast<std::uint32_t>(value.size())};
    return true;
  }
  // The pair text[start, end) with its first '=' at `eq` (or none).
  bool PushPair(const char* text, std::size_t start, std::size_t end, std::size_t eq) noexcept {
    if (eq == kNone) return true;
    std::string_view name = RequestView::Trim({text + start, eq - start});
    if (name.empty()) return true;
    return Push(name, RequestView::Trim({text + eq + 1, end - eq - 1}));
  }
  bool SplitHeader(std::string_view value) noexcept;
  static constexpr std::size_t kNone = static_cast<std::size_t>(-1);

  // No initializers: only the first size_ entries are ever read, and clearing them all would
  // cost more than the split saves. (Sizes fit: a request is at most kMaxRequestBytes.)
  struct Cookie {
    const char* name;
    const char* value;
    std::uint32_t name_size, value_size;
  };
  Cookie cookies_[kMaxSplit];
};

// What one evaluation works out about its request at most once, for the index and the matchers
// alike: in one pass over the headers, the request's size (for its bound) and where its Cookie
// headers are; the cookies, split on first use; and whether the path's first segment is a
// reserved word. Bound to one request, which must outlive it.
class RequestScan {
 public:
  // `cookies`: whether anything will list the cookies (else they are never split).
  void Bind(const RequestView& request, bool cookies) noexcept {
    reserved_for_ = nullptr;
    cookie_headers_.Clear();
    std::size_t bytes =
        request.method.size() + request.host.size() + request.path.size() + request.query.size();
    for (std::size_t i = 0; i < request.headers.size(); ++i) {
      const Header& h = request.headers[i];
      bytes += h.name.size() + h.value.size();
      if (CookieHeaders::Is(h)) cookie_headers_.Note(i);
    }
    for (const Header& c : request.cookies) bytes += c.name.size() + c.value.size();
    bytes_ = bytes;
    fields_ = request.headers.size() + request.cookies.size();
    if (cookies) cookies_.Bind(request, &cookie_headers_);
  }
  // Headers and cookies, and bytes in all (the method, host, path and query included).
  std::size_t fields() const noexcept { return fields_; }
  std::size_t bytes() const noexcept { return bytes_; }
  const CookieHeaders& cookie_headers() const noexcept { return cookie_headers_; }
  CookieList& cookies() noexcept { return cookies_; }
  // words.Contains(segment), remembered for the one view of the request's text last asked
  // about (the path's first segment, which the index and the path matchers both ask about).
  // `words` is the same on every call: the ruleset's reserved words.
  bool Reserved(const NameTable& words, std::string_view segment) noexcept {
    if (segment.data() != reserved_for_ || segment.size() != reserved_size_) {
      reserved_for_ = segment.data();
      reserved_size_ = segment.size();
      reserved_ = words.Contains(segment);
    }
    return reserved_;
  }

 private:
  const char* reserved_for_ = nullptr;
  std::size_t reserved_size_ = 0;
  bool reserved_ = false;
  std::size_t fields_ = 0, bytes_ = 0;
  CookieHeaders cookie_headers_;
  CookieList cookies_;
};

class RuleIndex {
 public:
  // Rulesets larger than this are evaluated rule by rule, without the index.
  static constexpr std::size_t kMaxRules = 4096;
  static constexpr std::size_t kMaxWords = kMaxRules / 64;

  // `reserved_words` must outlive the index (both live in the compiled ruleset).
  void Build(const std::vector<Rule>& rules, const NameTable* reserved_words);
  bool enabled() const noexcept { return enabled_; }
  std::size_t words() const noexcept { return words_; }
  // Whether any rule reads cookies (the evaluator splits them only then).
  bool reads_cookies() const noexcept { return reads_cookies_; }

  // Sets `out` (words() words) to the candidate rules for the request, counting every rule
  // anchored on a header as one until LookAtHeaders: looking up every header name is the
  // dearest part, and a request an earlier rule decides never needs it.
  void Candidates(const RequestView& request, RequestScan& scan,
                  std::uint64_t* out) const noexcept;
  bool AnchoredOnHeader(std::size_t rule) const noexcept {
    return header_rules_[rule / 64] >> (rule % 64) & 1;
  }
  // Replaces the header-anchored rules in `out` with those whose header the request has.
  void LookAtHeaders(const RequestView& request, std::uint64_t* out) const noexcept;

 private:
  using Bits = std::vector<std::uint64_t>;
  // Names (header names, cookie names or path prefixes) and the rules each one anchors.
  struct Anchors {
    explicit Anchors(bool ignore_case) : names(ignore_case) {}
    Bits* Add(std::string_view name, std::size_t words);
    NameTable names;
    std::vector<Bits> bits;  // by name id
  };

  // out |= bits, a word at a time (most rulesets have one word: up to 64 rules).
  void Or(const Bits& bits, std::uint64_t* out) const noexcept {
    const std::uint64_t* b = bits.data();
    out[0] |= b[0];
    for (std::size_t w = 1; w < words_; ++w) out[w] |= b[w];
  }

  bool enabled_ = false;
  bool reads_cookies_ = false;
  std::size_t words_ = 0;
  Bits always_;
  Anchors headers_{true};
  Bits header_rules_;  // every rule anchored on a header
  // Exact cookie names, and rules that match cookie names by regex: those are candidates
  // whenever the request has a cookie at all, so that no regex runs before a rule needs it.
  Anchors cookies_{false};
  Bits any_cookie_rules_;
  bool has_any_cookie_rules_ = false;
  // With this few cookie names, the Cookie headers are searched for each name instead of split:
  // a name found anywhere makes its rules candidates (the rule then reads the real pairs). Each
  // name is a scan of the headers: on the benchmark mix one name searched costs 80 instructions
  // per classification less than a split, three names 130 more.
  static constexpr std::size_t kMaxSearchedCookieNames = 2;
  // Paths: rules that need a literal prefix (from a pattern's leading literal segments or an
  // anchored regex), looked up once per distinct prefix length; and rules whose first segment
  // is a parameter (never a reserved word, never empty).
  static constexpr std::size_t kMaxPrefixLengths = 16;
  Anchors prefixes_{false};
  std::vector<std::size_t> prefix_lengths_;  // ascending
  Bits param_segment_rules_;
  const NameTable* reserved_ = nullptr;
};

}  // namespace cellroute::internal
