#include "rules/index.h"

#include <algorithm>
#include <bit>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "common/text.h"
#include "rules/compiled.h"

namespace cellroute::internal {

namespace {

std::string CommonPrefix(const std::string& a, const std::string& b) {
  std::size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return a.substr(0, n);
}

// What a scan of a pattern's top level found. `known` is false for any construct the scan
// does not model exactly (\Q...\E quoting, word boundaries, flag groups such as (?m) that
// change what '^' means, unbalanced parentheses): the caller then assumes nothing about the
// pattern, so a wrong guess can only cost speed, never drop a match.
struct TopLevel {
  bool known = false;
  bool alternation = false;
};

TopLevel ScanTopLevel(std::string_view src) {
  TopLevel out;
  int depth = 0;
  const std::size_t n = src.size();
  for (std::size_t i = 0; i < n; ++i) {
    char c = src[i];
    if (c == '\\') {
      // \Q...\E quotes anything; RE2's PossibleMatchRange gets word boundaries wrong (for
      // ^\ba?a* it claims every match starts with "a").
      if (i + 1 < n && (src[i + 1] == 'Q' || src[i + 1] == 'b' || src[i + 1] == 'B')) return {};
      ++i;
    } else if (c == '[') {
      // A class runs to its closing ']': a ']' right after '[' or '[^' is a literal, and so is
      // anything escaped; '[:name:]' may appear inside.
      ++i;
      if (i < n && src[i] == '^') ++i;
      if (i < n && src[i] == ']') ++i;
      for (; i < n && src[i] != ']'; ++i) {
        if (src[i] == '\\') {
          ++i;
        } else if (src[i] == '[' && i + 1 < n && src[i + 1] == ':') {
          std::size_t end = src.find(":]", i + 2);
          if (end == std::string_view::npos) return {};
          i = end + 1;
        }
      }
      if (i >= n) return {};
    } else if (c == '(') {
      // Only plain, non-capturing and named groups; any flag group is not modelled.
      if (i + 1 < n && src[i + 1] == '?') {
        char kind = i + 2 < n ? src[i + 2] : '\0';
        if (kind != ':' && kind != 'P' && kind != '<') return {};
      }
      ++depth;
    } else if (c == ')') {
      if (--depth < 0) return {};
    } else if (c == '|' && depth == 0) {
      out.alternation = true;
    }
  }
  out.known = depth == 0;
  return out;
}

// True only when every match of the regex must start where the text starts: a leading '^'
// that is not repeated, and no '|' outside parentheses or classes (which could offer an
// unanchored branch), in a pattern the scan fully understood.
bool AnchoredAtStart(std::string_view source) {
  if (source.size() < 2 || source[0] != '^') return false;
  if (std::string_view("*+?{").find(source[1]) != std::string_view::npos) return false;
  TopLevel t = ScanTopLevel(source);
  return t.known && !t.alternation;
}

}  // namespace

std::string RegexLiteralPrefix(const Regex& rx, bool whole) {
  if (whole) {
    TopLevel t = ScanTopLevel(rx.source);
    if (!t.known || t.alternation) return {};
  } else if (!AnchoredAtStart(rx.source)) {
    return {};
  }
  std::string min, max;
  if (!rx.re->PossibleMatchRange(&min, &max, 64)) return {};
  return CommonPrefix(min, max);
}

namespace {

// The literal text every path a matcher accepts starts with ("" when unknown): the leading
// literal segments of a pattern ("/api/v4/:id" gives "/api/v4"), or an anchored regex's prefix.
std::string PathPrefix(const Matcher& m) {
  if (m.pattern.empty()) return m.value_regex ? m.value_regex->prefix : std::string();
  std::string prefix;
  for (const PathSegment& seg : m.pattern) {
    if (seg.kind != PathSegment::Kind::kLiteral) break;
    prefix += "/" + seg.text;
  }
  return prefix;
}

std::string_view FirstSegment(std::string_view path, bool* complete) {
  if (path.empty() || path[0] != '/') {
    *complete = false;
    return {};
  }
  path.remove_prefix(1);
  std::size_t slash = path.find('/');
  *complete = true;
  return path.substr(0, slash);
}

}  // namespace

RuleIndex::Bits* RuleIndex::Anchors::Add(std::string_view name, std::size_t words) {
  std::size_t id = names.Add(name);
  if (id == bits.size()) bits.emplace_back(words, 0);
  return &bits[id];
}

bool CookieList::SplitHeader(std::string_view value) noexcept {
  const char* text = value.data();
  const std::size_t size = value.size();
  std::size_t start = 0, eq = kNone;
  // Visits the ';' and '=' bytes among text[base, base + 16), given as bit masks.
  auto visit = [&](std::size_t base, std::uint32_t semis, std::uint32_t eqs) {
    for (std::uint32_t events = semis | eqs; events != 0; events &= events - 1) {
      int bit = std::countr_zero(events);
      std::size_t pos = base + static_cast<std::size_t>(bit);
      if (semis >> bit & 1) {
        if (!PushPair(text, start, pos, eq)) return false;
        start = pos + 1;
        eq = kNone;
      } else if (eq == kNone) {
        eq = pos;
      }
    }
    return true;
  };
  std::size_t base = 0;
#ifdef __SSE2__
  const __m128i semi = _mm_set1_epi8(';'), equals = _mm_set1_epi8('=');
  for (; base + 16 <= size; base += 16) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(text + base));
    auto semis = static_cast<std::uint32_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, semi)));
    auto eqs = static_cast<std::uint32_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, equals)));
    if (!visit(base, semis, eqs)) return false;
  }
#endif
  for (; base < size; base += 16) {  // the tail (or everything, without SSE2)
    std::uint32_t semis = 0, eqs = 0;
    for (std::size_t i = 0; i < 16 && base + i < size; ++i) {
      semis |= static_cast<std::uint32_t>(text[base + i] == ';') << i;
      eqs |= static_cast<std::uint32_t>(text[base + i] == '=') << i;
    }
    if (!visit(base, semis, eqs)) return false;
  }
  return PushPair(text, start, size, eq);
}

void RuleIndex::Build(const std::vector<Rule>& rules, const NameTable* reserved_words) {
  for (const Rule& r : rules) {
    for (const Matcher& m : r.matchers) reads_cookies_ |= m.kind == MatcherKind::kCookie;
  }
  enabled_ = !rules.empty() && rules.size() <= kMaxRules;
  if (!enabled_) return;
  words_ = (rules.size() + 63) / 64;
  always_.assign(words_, 0);
  header_rules_.assign(words_, 0);
  param_segment_rules_.assign(words_, 0);
  any_cookie_rules_.assign(words_, 0);
  reserved_ = reserved_words;

  for (std::size_t i = 0; i < rules.size(); ++i) {
    const std::uint64_t bit = 1ULL << (i % 64);
    const std::size_t word = i / 64;
    Bits* anchor = nullptr;
    bool header_anchor = false;
    // The first anchor found is used; headers and cookies come first in the preference because
    // most requests lack any given one.
    for (int pass = 0; pass < 2 && anchor == nullptr; ++pass) {
      for (const Matcher& m : rules[i].matchers) {
        if (pass == 0 && m.kind == MatcherKind::kHeader) {
          anchor = headers_.Add(m.name, words_);
          header_anchor = true;
        } else if (pass == 0 && m.kind == MatcherKind::kCookie && !m.name_regex) {
          anchor = cookies_.Add(m.name, words_);
        } else if (pass == 0 && m.kind == MatcherKind::kCookie) {
          has_any_cookie_rules_ = true;
          anchor = &any_cookie_rules_;
        } else if (pass == 1 && m.kind == MatcherKind::kPath) {
          if (!m.pattern.empty() && m.pattern[0].kind == PathSegment::Kind::kParam) {
            anchor = &param_segment_rules_;
            break;
          }
          std::string prefix = PathPrefix(m);
          bool known_length = std::find(prefix_lengths_.begin(), prefix_lengths_.end(),
                                        prefix.size()) != prefix_lengths_.end();
          if (prefix.size() >= 2 && (known_length || prefix_lengths_.size() < kMaxPrefixLengths)) {
            if (!known_length) {
              prefix_lengths_.push_back(prefix.size());
              std::sort(prefix_lengths_.begin(), prefix_lengths_.end());
            }
            anchor = prefixes_.Add(prefix, words_);
          }
        }
        if (anchor != nullptr) break;
      }
    }
    (anchor ? *anchor : always_)[word] |= bit;
    if (header_anchor) header_rules_[word] |= bit;
  }
  headers_.names.Seal();
  cookies_.names.Seal();
  prefixes_.names.Seal();
}

void RuleIndex::LookAtHeaders(const RequestView& request, std::uint64_t* out) const noexcept {
  for (std::size_t w = 0; w < words_; ++w) out[w] &= ~header_rules_[w];
  for (const Header& h : request.headers) {
    int id = headers_.names.Find(h.name);
    if (id >= 0) Or(headers_.bits[static_cast<std::size_t>(id)], out);
  }
}

void RuleIndex::Candidates(const RequestView& request, RequestScan& scan,
                           std::uint64_t* out) const noexcept {
  std::copy(always_.begin(), always_.end(), out);
  Or(header_rules_, out);  // until LookAtHeaders

  if (cookies_.names.size() == 0 && !has_any_cookie_rules_) {
    // No rule is anchored on a cookie.
  } else if (cookies_.names.size() <= kMaxSearchedCookieNames) {
    // No split: a name anywhere in a Cookie header, or among the cookies given apart, makes
    // its rules candidates; any cookie text at all makes the regex-named rules candidates.
    bool any = false;
    scan.cookie_headers().Any(request, [&](std::string_view value) {
      if (value.empty()) return false;
      any = true;
      for (std::size_t id = 0; id < cookies_.names.size(); ++id) {
        if (ContainsBytes(value, cookies_.names.name(id))) Or(cookies_.bits[id], out);
      }
      return false;
    });
    for (const Header& c : request.cookies) {
      any = true;
      int id = cookies_.names.Find(c.name);
      if (id >= 0) Or(cookies_.bits[static_cast<std::size_t>(id)], out);
    }
    if (any) Or(any_cookie_rules_, out);
  } else {
    bool any = false;
    scan.cookies().Any([&](std::string_view name, std::string_view) {
      any = true;
      int id = cookies_.names.Find(name);
      if (id >= 0) Or(cookies_.bits[static_cast<std::size_t>(id)], out);
      return false;
    });
    if (any) Or(any_cookie_rules_, out);
  }

  const std::string_view path = request.path;
  for (std::size_t len : prefix_lengths_) {
    if (len > path.size()) break;
    int id = prefixes_.names.Find(path.substr(0, len));
    if (id >= 0) Or(prefixes_.bits[static_cast<std::size_t>(id)], out);
  }
  bool complete = false;
  std::string_view segment = FirstSegment(path, &complete);
  if (complete && !segment.empty() && !scan.Reserved(*reserved_, segment)) {
    Or(param_segment_rules_, out);
  }
}

}  // namespace cellroute::internal
