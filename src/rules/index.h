// The prefilter that makes evaluation cost track the rules that could match rather than the
// rules there are. Each rule is filed under one "anchor": something cheap to check that the
// rule cannot match without (a header's presence, a cookie name, a literal prefix of the path).
// Per request, one pass over the headers, the cookies and the path's first segment collects
// the rules whose anchors are present; only those are evaluated, in order, so first-match-wins
// is unchanged. Rules with no usable anchor are always candidates.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cellroute/request.h"
#include "common/hash.h"

namespace cellroute::internal {

struct Rule;
struct Regex;
class WordSet;

class RuleIndex {
 public:
  // Rulesets larger than this are evaluated rule by rule, without the index.
  static constexpr std::size_t kMaxRules = 4096;
  static constexpr std::size_t kMaxWords = kMaxRules / 64;

  // `reserved_words` must outlive the index (both live in the compiled ruleset).
  void Build(const std::vector<Rule>& rules, const WordSet* reserved_words);
  bool enabled() const noexcept { return enabled_; }
  std::size_t words() const noexcept { return words_; }

  // Sets `out` (words() words) to the candidate rules for the request.
  void Candidates(const RequestView& request, std::uint64_t* out) const noexcept;

 private:
  using Bits = std::vector<std::uint64_t>;
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return HashKey(0, s); }
  };

  void Or(const Bits& bits, std::uint64_t* out) const noexcept;

  bool enabled_ = false;
  std::size_t words_ = 0;
  Bits always_;
  // Header names (lower case), behind a length filter; names longer than kMaxHeaderName are
  // compared one by one.
  static constexpr std::size_t kMaxHeaderName = 128;
  std::unordered_map<std::string, Bits, StringHash, std::equal_to<>> header_rules_;
  std::vector<std::pair<std::string, Bits*>> long_header_names_;
  std::uint64_t header_lengths_ = 0;  // bit n: some name has length n (names >= 63: bit 63)
  // Exact cookie names (with a length filter in front of the hash), and rules that match cookie
  // names by regex: those are candidates whenever the request has a cookie at all, so that no
  // regex runs before a rule needs it.
  std::unordered_map<std::string, Bits, StringHash, std::equal_to<>> cookie_rules_;
  std::uint64_t cookie_lengths_ = 0;
  Bits any_cookie_rules_;
  bool has_any_cookie_rules_ = false;
  // Paths: rules that need a literal prefix (from a pattern's leading literal segments or an
  // anchored regex), looked up once per distinct prefix length; and rules whose first segment
  // is a parameter (never a reserved word, never empty).
  static constexpr std::size_t kMaxPrefixLengths = 16;
  std::unordered_map<std::string, Bits, StringHash, std::equal_to<>> prefix_rules_;
  std::vector<std::size_t> prefix_lengths_;  // ascending
  Bits param_segment_rules_;
  const WordSet* reserved_ = nullptr;
};

}  // namespace cellroute::internal
