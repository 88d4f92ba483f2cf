// The compiled form of a ruleset: what Ruleset::Parse builds and the evaluator walks.
#pragma once

#include <re2/re2.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cellroute/rules.h"
#include "cellroute/token.h"
#include "common/text.h"
#include "rules/index.h"
#include "rules/simple_regex.h"

namespace cellroute::internal {

// Rewrites JavaScript named groups `(?<name>...)` as RE2's `(?P<name>...)`, leaving escapes,
// character classes and lookbehind-looking text alone (RE2 then rejects lookbehind itself).
std::string TranslateNamedGroups(std::string_view pattern);

struct Regex {
  struct Capture {
    int group = 0;  // 1-based RE2 group index
    std::string name;
    int id = 0;  // the variable's place among those its rule produces (Rule::produced)
  };
  std::string source;  // as written in the ruleset
  std::unique_ptr<RE2> re;
  std::vector<Capture> captures;  // named groups only
  int groups = 0;                 // all capturing groups
  // Literal text every match starts with, checked before RE2 runs ("" when none is known).
  std::string prefix;
  // The same regex without RE2, when its shape allows (see simple_regex.h).
  std::unique_ptr<SimpleRegex> simple;
};

// The literal text every match of `rx` starts at: for a search (`whole` false) only when the
// regex is anchored at the start; for a whole-text match (cookie names) always.
std::string RegexLiteralPrefix(const Regex& rx, bool whole);

// A cookie name against a regex_name: the whole name must match.
bool MatchWholeName(const Regex& rx, std::string_view name) noexcept;

enum class MatcherKind { kHeader, kCookie, kPath, kMethod, kHost, kQuery };

struct PathSegment {
  enum class Kind { kLiteral, kParam, kRest };
  Kind kind = Kind::kLiteral;
  std::string text;  // the literal, or the parameter's name
  int id = 0;        // a parameter's place among its rule's variables (as Regex::Capture)
};

// The fields a token transform produces are token::kRoutingKeys, one letter each, sorted (as a
// payload lists its fields): a field's rank is its key's place there.
static_assert(std::is_sorted(token::kRoutingKeys.begin(), token::kRoutingKeys.end()));
inline constexpr int kTokenFieldCount = static_cast<int>(token::kRoutingKeys.size());
inline constexpr auto kTokenFieldRanks = [] {
  std::array<std::int8_t, 256> ranks{};
  ranks.fill(-1);
  for (std::size_t i = 0; i < token::kRoutingKeys.size(); ++i) {
    ranks[static_cast<unsigned char>(token::kRoutingKeys[i])] = static_cast<std::int8_t>(i);
  }
  return ranks;
}();
// The rank of a token field's key, or -1 for any other key.
constexpr int TokenFieldRank(std::string_view key) noexcept {
  return key.size() == 1 ? kTokenFieldRanks[static_cast<unsigned char>(key[0])] : -1;
}

struct Matcher {
  MatcherKind kind = MatcherKind::kHeader;
  std::string name;                    // header name (lower case) or exact cookie name
  FoldedName header;                   // the header name, compared ignoring case
  std::unique_ptr<Regex> name_regex;   // cookie regex_name (whole name must match)
  std::unique_ptr<Regex> value_regex;  // regex_value (searched anywhere, as JavaScript does)
  std::vector<PathSegment> pattern;    // path segment pattern, when given
  std::string pattern_source;
  std::string description;  // for explanations: `header runner-token`, ...
};

struct Template {
  struct Part {
    bool variable = false;
    std::string text;  // literal text or variable name
    // What the variable is, when the load can tell: a capture or path parameter (its id), or
    // a token's field (its rank); -1 when neither. Each is produced at most once per rule, so
    // it is found by these alone without recording, and recorded where every variable before
    // it was produced (Rule::produced + rank for a field) unless an optional group did not
    // take part: evaluation looks there first, checks the name, and searches only on a miss.
    int capture = -1;
    int field = -1;
  };
  std::vector<Part> parts;
  std::string source;
  bool present = false;
};

enum class TransformKind {
  kNone,
  kRoutableTokenPayload,  // GitLab: captured B plus its base 36 length
  kRoutableToken,         // extension: a whole token, CRC checked
  kBase64LineDelimited,
  kBase64Json,
};

struct Transform {
  TransformKind kind = TransformKind::kNone;
  std::string type_name;
  Template input;
  Template length;
  std::string output = "decoded";
};

struct Rule {
  std::string id;
  // The id again, padded to a fixed size: copied into every Outcome as one fixed-size move.
  std::array<char, kMaxRuleIdBytes> id_bytes{};
  std::vector<Matcher> matchers;
  Transform transform;
  std::vector<Template> validate_exist;
  Action action = Action::kNone;
  ClassifyType type = ClassifyType::kNone;
  Template value;
  Template proxy_address;
  // The captures and path parameters the rule can produce (their ids are 0 to produced - 1).
  int produced = 0;
  // Whether an outcome that does not record variables can evaluate this rule without them:
  // every variable a template reads is a capture or parameter (at most 32) or a token's field.
  // Otherwise (the base64 transforms' fields have any names) the rule records its variables
  // and the outcome hides them once decided.
  bool lean_variables = false;
};

}  // namespace cellroute::internal

namespace cellroute {

struct Ruleset::Compiled {
  std::string source;
  std::vector<internal::Rule> rules;
  internal::NameTable reserved_words;  // never the value of a first-segment path parameter
  internal::RuleIndex index;           // which rules a request could match
};

// Fills Outcomes. One evaluation routine serves Evaluate and Explain, so they cannot disagree.
class RuleEvaluator {
 public:
  // The reference evaluation (Explain, and what tests compare the index against): every rule
  // in order, not only the index's candidates, each recorded in `trace` with its reason.
  // Evaluate tries the index's candidates (Pass, Continue); both decide with EvalRule.
  static void Trace(const Ruleset::Compiled& compiled, const RequestView& request,
                    std::size_t first_rule, Outcome* out, std::vector<RuleTrace>* trace);

  // One request's evaluation, resumable: the request-size bound, the cookie split and the
  // index's candidates are worked out on the first call and serve every later one, so a
  // fall-through (evaluation going on below a rule whose claim nobody owns) repeats none of
  // them. Bound to one request, which must outlive it.
  class Pass {
   public:
    explicit Pass(const RequestView& request) noexcept : request_(request) {}

   private:
    friend class RuleEvaluator;
    const RequestView& request_;
    bool started_ = false;
    bool within_limits_ = false;
    bool headers_looked_at_ = false;
    internal::RequestScan scan_;
    std::uint64_t candidates_[internal::RuleIndex::kMaxWords];
  };
  // Ruleset::Evaluate for the pass's request, from `first_rule` on.
  static void Evaluate(const Ruleset& rules, Pass* pass, std::size_t first_rule,
                       Outcome* out) noexcept;

 private:
  using Span = Outcome::Span;
  static void Start(const Ruleset::Compiled& compiled, Pass* pass, Outcome* out) noexcept;
  // Records rule `i`'s part of a decision that ended on it with `kind`.
  static void Finish(const internal::Rule& rule, std::size_t i, Outcome::Kind kind,
                     Outcome* out) noexcept;
  static void Continue(const Ruleset::Compiled& compiled, Pass* pass, std::size_t first_rule,
                       Outcome* out) noexcept;
  static Outcome::Kind EvalRule(const Ruleset::Compiled& compiled, const internal::Rule& rule,
                                const RequestView& request, internal::RequestScan& scan,
                                Outcome* out, std::string* why);
  // Copies `text` into the outcome's buffer, short of its last `reserved` bytes; false when it
  // does not fit.
  static bool Store(Outcome* out, std::string_view text, Span* span,
                    std::size_t reserved = 0) noexcept;
  class Variables;  // the variables of the rule being evaluated (evaluate.cpp)
  static bool AddVariable(Outcome* out, std::string_view name, std::string_view value) noexcept;
  static bool AddVariable(Outcome* out, std::string_view ns, std::string_view field,
                          std::string_view value) noexcept;
  enum class Render { kOk, kMissing, kFull };
  // Renders `t` into the outcome's buffer (`span`; a variable alone is placed there, copied
  // at most once) or as a view (`text`; a variable alone is not copied at all).
  static Render RenderTemplate(Variables& vars, const internal::Template& t, Span* span,
                               std::string_view* text, std::string_view* missing) noexcept;
  // RenderTemplate for a template that is not one variable alone.
  static Render RenderParts(Variables& vars, const internal::Template& t, Span* span,
                            std::string_view* text, std::string_view* missing) noexcept;
  // Records rx's named captures as variables when it matches `text`: searched anywhere in it,
  // or matching all of it when `whole` (cookie names).
  static bool MatchRegex(const internal::Regex& rx, std::string_view text, Variables& vars,
                         bool* overflow, bool whole = false) noexcept;
  static bool MatchPath(const Ruleset::Compiled& compiled, const internal::Matcher& m,
                        std::string_view path, internal::RequestScan& scan, Variables& vars,
                        bool* overflow, std::string* why);
  static bool ApplyTransform(const internal::Transform& t, Variables& vars, std::string* why);
  static void Reset(Outcome* out) noexcept;
  // False (and `out` rejected, saying which bound) past kMaxRequestFields or kMaxRequestBytes.
  static bool WithinLimits(const internal::RequestScan& scan, Outcome* out) noexcept;
  [[gnu::cold]] static void RejectOverLimits(const internal::RequestScan& scan,
                                             Outcome* out) noexcept;
};

}  // namespace cellroute
