#include "rules/index.h"

#include <algorithm>

#include "rules/compiled.h"

namespace cellroute::internal {

namespace {

char Lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string CommonPrefix(const std::string& a, const std::string& b) {
  std::size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return a.substr(0, n);
}

// True when every match of the regex must start where the text starts: a leading '^' and no
// '|' outside parentheses or classes (which could offer an unanchored branch).
bool AnchoredAtStart(std::string_view source) {
  if (source.empty() || source[0] != '^') return false;
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
      return false;
    }
  }
  return true;
}

// The literal text every match of `rx` begins with ("" when unknown).
std::string LiteralPrefix(const Regex& rx) {
  if (!AnchoredAtStart(rx.source)) return {};
  std::string min, max;
  if (!rx.re->PossibleMatchRange(&min, &max, 64)) return {};
  return CommonPrefix(min, max);
}

// The first path segment every match of a path regex must have, when its literal prefix pins
// one ("/api/v4/..." pins "api"); "" otherwise.
std::string PinnedSegment(const Regex& rx) {
  std::string prefix = LiteralPrefix(rx);
  if (prefix.size() < 2 || prefix[0] != '/') return {};
  std::size_t slash = prefix.find('/', 1);
  if (slash == std::string::npos || slash == 1) return {};
  return prefix.substr(1, slash - 1);
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

std::size_t RuleIndex::AddAnchor(std::vector<Bits>* table) {
  table->emplace_back(words_, 0);
  return table->size() - 1;
}

void RuleIndex::Build(const std::vector<Rule>& rules,
                      const std::vector<std::string>& reserved_words) {
  enabled_ = !rules.empty() && rules.size() <= kMaxRules;
  if (!enabled_) return;
  words_ = (rules.size() + 63) / 64;
  always_.assign(words_, 0);
  param_segment_rules_.assign(words_, 0);
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
          auto it = std::find(header_names_.begin(), header_names_.end(), m.name);
          std::size_t slot = static_cast<std::size_t>(it - header_names_.begin());
          if (it == header_names_.end()) {
            header_names_.push_back(m.name);
            AddAnchor(&header_rules_);
            header_lengths_ |= 1ULL << std::min<std::size_t>(m.name.size(), 63);
          }
          anchor = &header_rules_[slot];
        } else if (pass == 0 && m.kind == MatcherKind::kCookie && !m.name_regex) {
          auto [it, inserted] = cookie_rules_.try_emplace(m.name, Bits(words_, 0));
          anchor = &it->second;
        } else if (pass == 0 && m.kind == MatcherKind::kCookie) {
          auto same = [&](const CookieRegex& c) { return c.regex->source == m.name_regex->source; };
          auto it = std::find_if(cookie_regexes_.begin(), cookie_regexes_.end(), same);
          if (it == cookie_regexes_.end()) {
            cookie_regexes_.push_back({m.name_regex.get(), {}, Bits(words_, 0)});
            // regex_name matches the whole name, so the prefix holds without a leading '^'.
            std::string min, max;
            if (m.name_regex->source.find('|') == std::string::npos &&
                m.name_regex->re->PossibleMatchRange(&min, &max, 64)) {
              cookie_regexes_.back().prefix = CommonPrefix(min, max);
            }
            it = cookie_regexes_.end() - 1;
          }
          anchor = &it->rules;
        } else if (pass == 1 && m.kind == MatcherKind::kPath) {
          std::string segment;
          if (!m.pattern.empty()) {
            if (m.pattern[0].kind == PathSegment::Kind::kLiteral) {
              segment = m.pattern[0].text;
            } else if (m.pattern[0].kind == PathSegment::Kind::kParam) {
              anchor = &param_segment_rules_;
              break;
            }
          } else if (m.value_regex) {
            segment = PinnedSegment(*m.value_regex);
          }
          if (!segment.empty()) {
            auto [it, inserted] = segment_rules_.try_emplace(segment, Bits(words_, 0));
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

bool RuleIndex::Reserved(std::string_view segment) const noexcept {
  char lower[64];
  if (segment.size() > sizeof(lower)) return false;
  for (std::size_t i = 0; i < segment.size(); ++i) lower[i] = Lower(segment[i]);
  std::string_view key(lower, segment.size());
  return std::binary_search(reserved_.begin(), reserved_.end(), key,
                            [](std::string_view a, std::string_view b) { return a < b; });
}

void RuleIndex::Candidates(const RequestView& request, std::uint64_t* out) const noexcept {
  std::copy(always_.begin(), always_.end(), out);

  if (!header_names_.empty()) {
    for (const Header& h : request.headers) {
      if (!(header_lengths_ >> std::min<std::size_t>(h.name.size(), 63) & 1)) continue;
      for (std::size_t slot = 0; slot < header_names_.size(); ++slot) {
        if (RequestView::EqualsIgnoreCase(h.name, header_names_[slot])) {
          Or(header_rules_[slot], out);
          break;
        }
      }
    }
  }

  if (!cookie_rules_.empty() || !cookie_regexes_.empty()) {
    request.AnyCookie([&](std::string_view name, std::string_view) {
      if (!cookie_rules_.empty()) {
        auto it = cookie_rules_.find(name);
        if (it != cookie_rules_.end()) Or(it->second, out);
      }
      for (const CookieRegex& c : cookie_regexes_) {
        if (name.substr(0, c.prefix.size()) != c.prefix) continue;
        if (c.regex->re->Match(re2::StringPiece(name.data(), name.size()), 0, name.size(),
                               RE2::ANCHOR_BOTH, nullptr, 0)) {
          Or(c.rules, out);
        }
      }
      return false;  // visit every cookie
    });
  }

  bool complete = false;
  std::string_view segment = FirstSegment(request.path, &complete);
  if (complete) {
    if (!segment_rules_.empty()) {
      auto it = segment_rules_.find(segment);
      if (it != segment_rules_.end()) Or(it->second, out);
    }
    if (!segment.empty() && !Reserved(segment)) Or(param_segment_rules_, out);
  }
}

}  // namespace cellroute::internal
