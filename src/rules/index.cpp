#include "rules/index.h"

#include <algorithm>

#include "common/text.h"
#include "rules/compiled.h"

namespace cellroute::internal {

namespace {

std::string CommonPrefix(const std::string& a, const std::string& b) {
  std::size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return a.substr(0, n);
}

bool HasTopLevelAlternation(std::string_view source) {
  int depth = 0;
  bool in_class = false;
  for (std::size_t i = 0; i < source.size(); ++i) {
    char c = source[i];
    if (c == '\\') {
      ++i;
    } else if (in_class) {
      in_class = c != ']';
    } else if (c == '[') {
      in_class = true;
    } else if (c == '(') {
      ++depth;
    } else if (c == ')') {
      --depth;
    } else if (c == '|' && depth == 0) {
      return true;
    }
  }
  return false;
}

// True when every match of the regex must start where the text starts: a leading '^' and no
// '|' outside parentheses or classes (which could offer an unanchored branch).
bool AnchoredAtStart(std::string_view source) {
  if (source.empty() || source[0] != '^') return false;
  return !HasTopLevelAlternation(source);
}

}  // namespace

std::string RegexLiteralPrefix(const Regex& rx, bool whole) {
  if (whole ? HasTopLevelAlternation(rx.source) : !AnchoredAtStart(rx.source)) return {};
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

void RuleIndex::Build(const std::vector<Rule>& rules, const WordSet* reserved_words) {
  enabled_ = !rules.empty() && rules.size() <= kMaxRules;
  if (!enabled_) return;
  words_ = (rules.size() + 63) / 64;
  always_.assign(words_, 0);
  param_segment_rules_.assign(words_, 0);
  any_cookie_rules_.assign(words_, 0);
  reserved_ = reserved_words;

  for (std::size_t i = 0; i < rules.size(); ++i) {
    const std::uint64_t bit = 1ULL << (i % 64);
    const std::size_t word = i / 64;
    Bits* anchor = nullptr;
    // The first anchor found is used; headers and cookies come first in the preference because
    // most requests lack any given one.
    for (int pass = 0; pass < 2 && anchor == nullptr; ++pass) {
      for (const Matcher& m : rules[i].matchers) {
        if (pass == 0 && m.kind == MatcherKind::kHeader) {
          auto [it, inserted] = header_rules_.try_emplace(m.name, Bits(words_, 0));
          if (inserted) {
            header_lengths_ |= 1ULL << std::min<std::size_t>(m.name.size(), 63);
            if (m.name.size() > kMaxHeaderName)
              long_header_names_.emplace_back(m.name, &it->second);
          }
          anchor = &it->second;
        } else if (pass == 0 && m.kind == MatcherKind::kCookie && !m.name_regex) {
          auto [it, inserted] = cookie_rules_.try_emplace(m.name, Bits(words_, 0));
          cookie_lengths_ |= 1ULL << std::min<std::size_t>(m.name.size(), 63);
          anchor = &it->second;
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
            auto [it, inserted] = prefix_rules_.try_emplace(prefix, Bits(words_, 0));
            anchor = &it->second;
          }
        }
        if (anchor != nullptr) break;
      }
    }
    (anchor ? *anchor : always_)[word] |= bit;
  }
}

void RuleIndex::Or(const Bits& bits, std::uint64_t* out) const noexcept {
  for (std::size_t w = 0; w < words_; ++w) out[w] |= bits[w];
}

void RuleIndex::Candidates(const RequestView& request, std::uint64_t* out) const noexcept {
  std::copy(always_.begin(), always_.end(), out);

  if (!header_rules_.empty()) {
    char lower[kMaxHeaderName];
    for (const Header& h : request.headers) {
      std::size_t n = h.name.size();
      if (!(header_lengths_ >> std::min<std::size_t>(n, 63) & 1)) continue;
      if (n > kMaxHeaderName) {
        for (const auto& [name, bits] : long_header_names_) {
          if (RequestView::EqualsIgnoreCase(h.name, name)) Or(*bits, out);
        }
        continue;
      }
      for (std::size_t i = 0; i < n; ++i) lower[i] = AsciiLower(h.name[i]);
      auto it = header_rules_.find(std::string_view(lower, n));
      if (it != header_rules_.end()) Or(it->second, out);
    }
  }

  if (!cookie_rules_.empty() || has_any_cookie_rules_) {
    bool any = false;
    request.AnyCookie([&](std::string_view name, std::string_view) {
      any = true;
      if (cookie_lengths_ >> std::min<std::size_t>(name.size(), 63) & 1) {
        auto it = cookie_rules_.find(name);
        if (it != cookie_rules_.end()) Or(it->second, out);
      }
      return cookie_rules_.empty();  // with only regex-named rules, one cookie is enough
    });
    if (any) Or(any_cookie_rules_, out);
  }

  const std::string_view path = request.path;
  for (std::size_t len : prefix_lengths_) {
    if (len > path.size()) break;
    auto it = prefix_rules_.find(path.substr(0, len));
    if (it != prefix_rules_.end()) Or(it->second, out);
  }
  bool complete = false;
  std::string_view segment = FirstSegment(path, &complete);
  if (complete && !segment.empty() && !reserved_->Contains(segment)) Or(param_segment_rules_, out);
}

}  // namespace cellroute::internal
