// Router: rules + topology = one routing decision.
//
//   auto router = cellroute::Router::FromFiles({.rules = "rules.json",
//                                               .topology = "config.toml",
//                                               .claims = "claims.json"});
//   cellroute::Decision d = router->Route(request);
//   proxy_to(d.address());
//   set_header("X-GitLab-HTTP-Router-Rule-Action", d.action_header());
//   set_header("X-GitLab-HTTP-Router-Rule-Type", d.type_header());
//
// The ruleset classifies the request; a Resolver turns the classification into a cell. The
// resolver is an interface so that the answer can come from the local cell list and claims
// file, a route table, or a remote Topology Service, in that order. When nothing knows the
// answer, the request goes to the legacy (first) cell and the decision says so.
//
// Route() never throws, never blocks on the network and does not allocate, with one exception:
// with a Topology Service resolver, a claim the table lacks queues a fetch (one key copied,
// under a short lock) and the decision comes back pending (or unavailable, past the queue's
// bound). A Decision is a plain value that
// owns everything it shows (rule id, values, address; the names are static), so it may be
// kept after the Router is gone.
//
// A Router is safe to share across threads. Copies are handles to one router: Reload swaps
// the rules and the resolver for all of them at once (a request in flight finishes with what
// it started with; every later one sees the new). Every decision is counted (by rule, source
// and fallback, rejections by kind, one in 64 timed), without a lock or an allocation;
// Metrics() prints the counts in the Prometheus text format (docs/operations.md).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cellroute/export.h"
#include "cellroute/request.h"
#include "cellroute/rules.h"
#include "cellroute/status.h"
#include "cellroute/topology.h"

namespace cellroute {

// Where the cell of a decision came from.
enum class Source : std::uint8_t {
  kNone = 0,      // rejected request: no cell
  kCellList = 1,  // FIRST_CELL / SESSION_PREFIX / CELL_ID answered from the cell list
  kClaims = 2,    // a claim answered from the local claims file
  kTable = 3,     // a claim answered from the route table
  kTopologyService = 4,
  kProxy = 5,     // the rule's proxy action named the address
  kFallback = 6,  // nothing knew: the legacy cell
};

// Why a decision fell back to the legacy cell.
enum class Fallback : std::uint8_t {
  kNone = 0,
  kNoRuleMatched = 1,
  kUnknownCell = 2,   // SESSION_PREFIX / CELL_ID named no known cell
  kUnknownClaim = 3,  // no owner known for the claim (the service's NOT_FOUND)
  kUnavailable = 4,   // the owner could not be asked in time
  kPending = 5,       // the owner is being asked now: RouteWait or RouteAsync get the answer
  kNoTopology = 6,    // no cell list is known at all (no snapshot, no static topology, and the
                      // Topology Service has not answered well): no cell, no address
};

CELLROUTE_EXPORT std::string_view SourceName(Source s) noexcept;
CELLROUTE_EXPORT std::string_view FallbackName(Fallback f) noexcept;

// A resolver's answer for one classification.
struct CELLROUTE_EXPORT Resolution {
  std::int64_t cell_id = 0;
  std::array<char, kMaxAddressBytes + 1> address{};  // NUL-terminated copy
  std::uint16_t address_size = 0;
  Source source = Source::kNone;
  Fallback fallback = Fallback::kNone;
  std::int64_t age_ms = 0;  // how old the answer is; 0 for local configuration

  std::string_view address_view() const noexcept { return {address.data(), address_size}; }
  // Back to no cell, writing only what the fields above need (not the whole address buffer).
  void Clear() noexcept {
    cell_id = 0;
    address[0] = '\0';
    address_size = 0;
    source = Source::kNone;
    fallback = Fallback::kNone;
    age_ms = 0;
  }
  // Copies `addr` (truncating nothing: addresses are at most kMaxAddressBytes, checked at load).
  void SetAddress(std::string_view addr) noexcept;
  void SetCell(const Cell& cell, Source from) noexcept;
};

// Turns a classification into a cell. Implementations must be thread-safe, must not throw, and
// must not block the caller on the network.
//
// Everything one request resolves goes through one Session, opened by Begin and closed by End
// on the caller's stack, so that the request sees one version of the topology even while a
// writer publishes a new one.
class CELLROUTE_EXPORT Resolver {
 public:
  struct Session {
    alignas(16) unsigned char storage[48];
    // Whether the Router opened this session inside cellroute's RCU read-side section, held
    // until after End (it does for every session it opens; no one else can say so): the table
    // resolver's Reader then borrows that section (ADR 0017).
    bool in_read_section() const noexcept { return in_read_section_; }

   private:
    friend class Router;
    bool in_read_section_ = false;
  };

  virtual ~Resolver();
  virtual void Begin(Session* session) const noexcept = 0;
  virtual void End(Session* session) const noexcept = 0;
  virtual void Resolve(Session& session, ClassifyType type, std::string_view value,
                       Resolution* out) const noexcept = 0;
  // The cell that takes whatever nothing else claims.
  virtual void ResolveLegacy(Session& session, Resolution* out) const noexcept = 0;

  // For resolvers that answer kPending: wait up to `deadline` for the answer to arrive (true
  // when it did), or run `done` once it has. The defaults have nothing to wait for.
  virtual bool Wait(ClassifyType type, std::string_view value,
                    std::chrono::milliseconds deadline) const;
  virtual void WhenResolved(ClassifyType type, std::string_view value,
                            std::function<void()> done) const;

  // Appends this resolver's metrics (Prometheus text format) to `out`. Default: none.
  virtual void AppendMetrics(std::string* out) const;
};

class RouteTable;

// Answers from a route table: the cell list for FIRST_CELL, SESSION_PREFIX and CELL_ID, the
// table's entries for claims. The table may change while the resolver is in use.
CELLROUTE_EXPORT std::shared_ptr<const Resolver> MakeTableResolver(
    std::shared_ptr<const RouteTable> table);

// A table no client will fill again (a forked child's copy of its parent's, see
// RebuildAfterFork): a claim it lacks decides as unavailable, not as unowned.
CELLROUTE_EXPORT std::shared_ptr<const Resolver> MakeFrozenResolver(
    std::shared_ptr<const RouteTable> table);

// A table holding `topology` and, as static entries, every claim of `claims`.
CELLROUTE_EXPORT std::shared_ptr<const Resolver> MakeStaticResolver(Topology topology,
                                                                    Claims claims);

class CELLROUTE_EXPORT Decision {
 public:
  const Outcome& outcome() const noexcept { return outcome_; }
  const Resolution& resolution() const noexcept { return resolution_; }
  // Whether routing into this decision records the rule's variables (Outcome::RecordVariables):
  // on unless turned off. A proxy that never shows them turns it off and routes faster.
  void RecordVariables(bool on) noexcept { outcome_.RecordVariables(on); }

  bool rejected() const noexcept { return outcome_.kind() == Outcome::Kind::kRejected; }
  std::string_view rule_id() const noexcept { return outcome_.rule_id(); }
  Action action() const noexcept { return outcome_.action(); }
  ClassifyType type() const noexcept { return outcome_.type(); }
  std::string_view value() const noexcept { return outcome_.value(); }
  std::int64_t cell_id() const noexcept { return resolution_.cell_id; }
  std::string_view address() const noexcept { return resolution_.address_view(); }
  Source source() const noexcept { return resolution_.source; }
  Fallback fallback() const noexcept { return resolution_.fallback; }

  // The values GitLab's router sets on the proxied request.
  std::string_view action_header() const noexcept { return ActionName(outcome_.action()); }
  std::string_view type_header() const noexcept { return ClassifyTypeName(outcome_.type()); }

  // One JSON object: rule, action, type, value, cell_id, address, source, fallback, variables.
  std::string ToJson() const;

 private:
  friend class Router;
  Outcome outcome_;
  Resolution resolution_;
};

class CELLROUTE_EXPORT Router {
 public:
  struct Files {
    std::string rules;     // empty: the embedded default ruleset
    std::string topology;  // empty: the embedded default topology
    std::string claims;    // empty: the embedded default claims when the topology is the
                           // default too, otherwise none
  };

  static Result<Router> Create(Ruleset rules, std::shared_ptr<const Resolver> resolver);
  static Result<Router> FromFiles(const Files& files);
  static Result<Router> FromDefaults() { return FromFiles({}); }

  // Never waits: a claim that must be asked for comes back pending (fallback() == kPending,
  // routed to the legacy cell) while the answer is fetched.
  Decision Route(const RequestView& request) const noexcept;
  void Route(const RequestView& request, Decision* out) const noexcept;
  // For Rails and tooling: waits up to `deadline` for a pending answer, then decides.
  Decision RouteWait(const RequestView& request, std::chrono::milliseconds deadline) const;
  // The same, into `out` (which keeps its RecordVariables setting, as Route's does).
  void RouteWait(const RequestView& request, std::chrono::milliseconds deadline,
                 Decision* out) const;
  // For event loops: `done` runs with the decision, at once when nothing is pending, else on
  // a resolver thread when the answer arrives. The request is copied.
  void RouteAsync(const RequestView& request, std::function<void(const Decision&)> done) const;

  struct Explained {
    Explanation rules;
    Decision decision;
    // {"trace": [{"rule", "result", "reason"}...], "decision": {...}}
    CELLROUTE_EXPORT std::string ToJson() const;
  };
  Explained Explain(const RequestView& request) const;

  // The rules and the resolver in use now.
  Ruleset rules() const;
  std::shared_ptr<const Resolver> resolver() const;

  // Routes every later request with `rules` and `resolver`, for this router and its copies.
  // Requests in flight finish with what they started with. Counted as a successful reload.
  Status Reload(Ruleset rules, std::shared_ptr<const Resolver> resolver);
  // Counts a reload that failed before it reached Reload (a configuration that did not load).
  void CountFailedReload() const noexcept;
  // Decisions are counted unless this is turned off (for this router and its copies); the
  // other metrics are kept either way. The benchmarks measure what counting costs with it.
  void SetCounting(bool on) noexcept;

  // Every metric in the Prometheus text exposition format 0.0.4: decisions, rejections, the
  // routing latency histogram, reloads, build information and the resolver's own (the route
  // table, the Topology Service client).
  std::string Metrics() const;

  struct Core;    // rules, resolver and their decision counters: one per reload
  struct Shared;  // what every copy of a router points to

 private:
  explicit Router(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
  // The classification a pending decision waits for.
  static bool PendingClaim(const Decision& d) noexcept;
  // `R`: Resolver, or the library's own final resolver class, called without virtual dispatch
  // (both defined and used in the library only).
  template <typename R>
  static void Resolve(const R& resolver, Resolver::Session& session, Decision* d) noexcept;
  // Route() decides once; RouteWait and RouteAsync decide a pending claim again once its answer
  // is in. Each request is counted once, as finally decided: a first attempt that comes back
  // pending is not counted, and a last attempt still pending is decided unavailable, then
  // counted.
  enum class Attempt : std::uint8_t { kOnly, kFirst, kLast };
  void RouteAttempt(const RequestView& request, Decision* out, Attempt attempt) const noexcept;
  template <typename R>
  static void RouteWith(const Core& core, const R& resolver, const RequestView& request,
                        Decision* out, bool counting, Attempt attempt) noexcept;
  std::shared_ptr<Shared> shared_;
};

// The defaults shipped in examples/ and compiled into the library, so that cellroute routes
// with no file and no service.
namespace defaults {
CELLROUTE_EXPORT std::string_view RulesJson() noexcept;
CELLROUTE_EXPORT std::string_view TopologyToml() noexcept;
CELLROUTE_EXPORT std::string_view ClaimsJson() noexcept;
}  // namespace defaults

}  // namespace cellroute
