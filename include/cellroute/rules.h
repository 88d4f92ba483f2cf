// Ruleset: GitLab HTTP Router rules, compiled once, evaluated per request.
//
//   auto rules = cellroute::Ruleset::LoadFile("rules.json");
//   if (!rules.ok()) { report(rules.status()); }      // every error, one per line
//   cellroute::Outcome out;
//   rules->Evaluate(request, &out);
//   if (out.kind() == cellroute::Outcome::Kind::kMatched) { use(out.rule_id(), out.value()); }
//
// A ruleset is an ordered list of rules; the first rule whose matchers all match wins (see
// docs/rules.md for the format). Loading validates everything up front (JSON syntax with
// line:column, unknown keys, regexes, templates, duplicate ids), so evaluation cannot fail on
// the ruleset's account. A Ruleset is immutable once built; copies share the compiled form and
// any number of threads may call Evaluate and Explain on it at once.
//
// Evaluate does not allocate. An Outcome owns everything it shows: the rule id, the captured
// values and the rendered classification live in its own fixed buffers, so it is a plain value
// that can be copied and kept after the Ruleset (or the Router) that made it is gone.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cellroute/export.h"
#include "cellroute/request.h"
#include "cellroute/status.h"

namespace cellroute {

// The longest cell or proxy address cellroute accepts (a DNS name plus a port fits).
inline constexpr std::size_t kMaxAddressBytes = 255;
// The longest rule id a ruleset may use: an Outcome keeps a copy of the id of its rule.
inline constexpr std::size_t kMaxRuleIdBytes = 128;
// The most rules a ruleset may have, and the largest compiled regex (RE2 program size).
inline constexpr std::size_t kMaxRules = 10'000;
inline constexpr int kMaxRegexProgramSize = 10'000;
// A request past either bound is rejected (400) before any rule runs: headers and cookies
// given separately, counted together, and every byte of method, host, path, query, header
// and cookie names and values.
inline constexpr std::size_t kMaxRequestFields = 256;
inline constexpr std::size_t kMaxRequestBytes = 64 * 1024;

enum class Action : std::uint8_t { kNone = 0, kClassify = 1, kProxy = 2 };

// What a classify action asks for. The claim kinds carry the field numbers of the Topology
// Service's types.v1.Claim oneof.
enum class ClassifyType : std::uint8_t {
  kNone = 0,
  kFirstCell = 1,
  kSessionPrefix = 2,
  kCellId = 3,
  kClaimRoute = 101,
  kClaimOrganizationPath = 102,
  kClaimRedirectRoute = 103,
  kClaimUsername = 104,
  kClaimEmail = 105,
  kClaimProjectId = 106,
  kClaimNamespaceId = 107,
  kClaimGpgKey = 108,
  kClaimSshKey = 109,
  kClaimUserId = 110,
  kClaimOrganizationId = 111,
  kClaimServiceDeskCustomEmail = 112,
};

inline constexpr bool IsClaim(ClassifyType t) noexcept { return static_cast<int>(t) > 100; }
// The Claim oneof field number of a claim type (route = 1 ... service_desk_custom_email = 12).
inline constexpr int ClaimFieldNumber(ClassifyType t) noexcept {
  return IsClaim(t) ? static_cast<int>(t) - 100 : 0;
}

// "classify" / "proxy" (the X-GitLab-HTTP-Router-Rule-Action value); "" for kNone.
CELLROUTE_EXPORT std::string_view ActionName(Action action) noexcept;
// "FIRST_CELL", "SESSION_PREFIX", "CELL_ID", or the claim's field name ("route",
// "organization_path", ...); "" for kNone.
CELLROUTE_EXPORT std::string_view ClassifyTypeName(ClassifyType type) noexcept;
// Inverse of ClassifyTypeName; claim names are also accepted in upper case ("ROUTE").
CELLROUTE_EXPORT bool ParseClassifyType(std::string_view name, ClassifyType* out) noexcept;

// The result of evaluating a ruleset against one request.
class CELLROUTE_EXPORT Outcome {
 public:
  enum class Kind : std::uint8_t {
    kNoMatch,   // no rule matched: the request goes to the legacy cell
    kMatched,   // rule_id() matched; action() says what to do
    kRejected,  // rule_id() matched but its input was malformed (e.g. a corrupt routable
                // token): GitLab's router answers HTTP 400; reason() says why
  };
  // What kind of input a rejected request had (kNone unless kind() is kRejected).
  enum class Rejection : std::uint8_t {
    kNone,
    kRequestLimits,  // more headers and cookies, or more bytes, than a request may have
    kInvalidInput,   // a rule's transform refused its input (a corrupt routable token)
    kValueTooLong,   // what a rule captured or rendered does not fit a decision
  };
  static constexpr std::size_t kMaxVariables = 32;
  static constexpr std::size_t kBufferBytes = 2048;

  struct Variable {
    std::string_view name;
    std::string_view value;
  };

  Kind kind() const noexcept { return kind_; }
  bool matched() const noexcept { return kind_ == Kind::kMatched; }
  std::string_view rule_id() const noexcept { return {rule_id_.data(), rule_id_size_}; }
  // Index of the rule in the ruleset; -1 when none matched.
  int rule_index() const noexcept { return rule_index_; }
  Action action() const noexcept { return action_; }
  ClassifyType type() const noexcept { return type_; }
  // The rendered classify value (e.g. "cell-2", "7", "gitlab-org"); empty for FIRST_CELL.
  std::string_view value() const noexcept { return View(value_); }
  // The rendered proxy address; empty when the proxy action names none (the legacy cell).
  std::string_view proxy_address() const noexcept { return View(proxy_); }
  // Why a request was rejected.
  std::string_view reason() const noexcept { return View(reason_); }
  Rejection rejection() const noexcept { return rejection_; }

  // Whether evaluating into this outcome records the variables of the rule that decided
  // (variable_count, variable, Find). On unless turned off, and kept across evaluations. Off,
  // the outcome shows no variables and deciding costs less: captures are not copied and a
  // token's fields are printed only when a template reads them. The decision is the same
  // either way, its bounds and rejections included. Explain always records.
  void RecordVariables(bool on) noexcept { record_variables_ = on; }
  bool records_variables() const noexcept { return record_variables_; }

  std::size_t variable_count() const noexcept { return nvars_; }
  Variable variable(std::size_t i) const noexcept {
    return {View(vars_[i].name), View(vars_[i].value)};
  }
  // The value of ${name}; false when the rule did not produce it.
  bool Find(std::string_view name, std::string_view* out) const noexcept;

 private:
  friend class RuleEvaluator;  // in src/rules: fills an Outcome
  struct Span {
    std::uint16_t offset = 0;
    std::uint16_t size = 0;
  };
  struct Slot {
    Span name;
    Span value;
  };
  std::string_view View(Span s) const noexcept { return {buffer_.data() + s.offset, s.size}; }
  // The first variable called `name`, or null.
  const Slot* FindSlot(std::string_view name) const noexcept;

  Kind kind_ = Kind::kNoMatch;
  Action action_ = Action::kNone;
  ClassifyType type_ = ClassifyType::kNone;
  int rule_index_ = -1;
  Span value_, proxy_, reason_;
  std::uint16_t used_ = 0;
  std::uint8_t nvars_ = 0;
  std::uint8_t rule_id_size_ = 0;
  bool record_variables_ = true;
  Rejection rejection_ = Rejection::kNone;
  // A copy, not a view into the Ruleset: an Outcome outlives the ruleset that made it.
  std::array<char, kMaxRuleIdBytes> rule_id_;
  // Left uninitialized: only the used_ bytes and nvars_ slots are ever read, and zeroing 2 KiB
  // per decision would cost more than routing many requests.
  std::array<Slot, kMaxVariables> vars_;
  std::array<char, kBufferBytes> buffer_;
};

// One rule's part in an explanation.
struct RuleTrace {
  std::string rule_id;
  Outcome::Kind result = Outcome::Kind::kNoMatch;
  std::string reason;  // why it did not match, or what it matched on
};

struct Explanation {
  std::vector<RuleTrace> rules;  // every rule tried, in order, up to and including the winner
  Outcome outcome;
};

class CELLROUTE_EXPORT Ruleset {
 public:
  // `source` names the input in errors (a file name, "<embedded rules>").
  static Result<Ruleset> Parse(std::string_view json, std::string_view source);
  static Result<Ruleset> LoadFile(const std::string& path);

  // First match wins, trying rules from index `first_rule` on. Never throws, never allocates.
  void Evaluate(const RequestView& request, Outcome* out,
                std::size_t first_rule = 0) const noexcept;
  // The same decision, with every rule tried and why it did or did not match. Allocates.
  Explanation Explain(const RequestView& request, std::size_t first_rule = 0) const;

  std::size_t size() const noexcept;
  std::string_view rule_id(std::size_t index) const noexcept;
  Action rule_action(std::size_t index) const noexcept;
  ClassifyType rule_type(std::size_t index) const noexcept;
  std::string_view source() const noexcept;

  struct Compiled;  // defined in src/rules

 private:
  friend class RuleEvaluator;  // in src/rules: resumable evaluation for the router
  explicit Ruleset(std::shared_ptr<const Compiled> compiled) : compiled_(std::move(compiled)) {}
  std::shared_ptr<const Compiled> compiled_;
};

}  // namespace cellroute
