#include "cellroute/router.h"

#include <time.h>

#include <atomic>
#include <mutex>
#include <nlohmann/json.hpp>
#include <vector>

#include "cellroute/topology_service.h"
#include "cellroute/version.h"
#include "common/json.h"
#include "common/prometheus.h"
#include "common/text.h"
#include "router/metrics.h"
#include "router/table_resolver.h"
#include "rules/compiled.h"
#include "table/rcu.h"

namespace cellroute {

std::string_view SourceName(Source s) noexcept {
  switch (s) {
    case Source::kNone:
      return "none";
    case Source::kCellList:
      return "cell_list";
    case Source::kClaims:
      return "claims_file";
    case Source::kTable:
      return "route_table";
    case Source::kTopologyService:
      return "topology_service";
    case Source::kProxy:
      return "proxy";
    case Source::kFallback:
      return "fallback";
  }
  return "unknown";
}

std::string_view FallbackName(Fallback f) noexcept {
  switch (f) {
    case Fallback::kNone:
      return "";
    case Fallback::kNoRuleMatched:
      return "no_rule_matched";
    case Fallback::kUnknownCell:
      return "unknown_cell";
    case Fallback::kUnknownClaim:
      return "unknown_claim";
    case Fallback::kUnavailable:
      return "unavailable";
    case Fallback::kPending:
      return "pending";
    case Fallback::kNoTopology:
      return "no_topology";
  }
  return "unknown";
}

struct Router::Core {
  Ruleset rules;
  std::shared_ptr<const Resolver> resolver;
  // `resolver` when it is the library's table resolver (every resolver the library makes),
  // which routing then calls directly; otherwise null.
  const internal::TableResolver* table_resolver;
  internal::DecisionMetrics metrics;
  Core(Ruleset r, std::shared_ptr<const Resolver> res)
      : rules(std::move(r)),
        resolver(std::move(res)),
        table_resolver(dynamic_cast<const internal::TableResolver*>(resolver.get())),
        metrics(rules) {}
};

// The core in use, read under RCU: a reader loads it inside a read-side section, so a core
// replaced by Reload is freed only after a grace period, when no Route can still be using it.
struct Router::Shared {
  std::atomic<const Core*> current{nullptr};
  char rcu_sync = 0;  // for ThreadSanitizer, as in the route table

  mutable std::mutex writer;         // Reload and Metrics
  std::vector<const Core*> retired;  // waiting for a grace period
  internal::DecisionTotals carried;  // counts of the cores already freed
  std::atomic<std::uint64_t> reloads_ok{0}, reloads_failed{0};
  std::atomic<bool> counting{true};

  explicit Shared(const Core* first) { current.store(first, std::memory_order_release); }
  ~Shared() {
    // No copy of the router is left, so no request is routing with any of these.
    for (const Core* c : retired) delete c;
    delete current.load(std::memory_order_acquire);
  }
  // Frees retired cores once no reader can see them, keeping their counts.
  void ReclaimLocked() {
    if (retired.empty() || !internal::RcuSynchronize(&rcu_sync)) return;
    for (const Core* c : retired) {
      c->metrics.AddTo(&carried);
      delete c;
    }
    retired.clear();
  }
};

namespace {
// One read of the current core: an RCU read-side section for as long as this lives.
class CoreReader {
 public:
  explicit CoreReader(const Router::Shared& shared) noexcept
      : shared_(shared), section_(internal::RcuReadLock()) {
    core_ = shared.current.load(std::memory_order_acquire);
  }
  ~CoreReader() { internal::RcuReadUnlock(section_, const_cast<char*>(&shared_.rcu_sync)); }
  CoreReader(const CoreReader&) = delete;
  CoreReader& operator=(const CoreReader&) = delete;
  const Router::Core& operator*() const noexcept { return *core_; }
  const Router::Core* operator->() const noexcept { return core_; }

 private:
  const Router::Shared& shared_;
  const internal::RcuSection section_;
  const Router::Core* core_;
};
}  // namespace

Result<Router> Router::Create(Ruleset rules, std::shared_ptr<const Resolver> resolver) {
  if (!resolver) return Status::Invalid("router: no resolver");
  internal::RcuInstallForkHandlers();
  return Router(std::make_shared<Shared>(new Core(std::move(rules), std::move(resolver))));
}

Result<Router> Router::FromFiles(const Files& files) {
  RouterConfig config;
  config.rules_path = files.rules;
  config.topology_path = files.topology;
  config.claims_path = files.claims;
  auto built = BuildRouter(config);
  if (!built.ok()) return built.status();
  return std::move(built).value().router;
}

Status Router::Reload(Ruleset rules, std::shared_ptr<const Resolver> resolver) {
  if (!resolver) {
    CountFailedReload();
    return Status::Invalid("router: no resolver");
  }
  auto* next = new Core(std::move(rules), std::move(resolver));
  std::lock_guard<std::mutex> lock(shared_->writer);
  shared_->retired.push_back(shared_->current.exchange(next, std::memory_order_acq_rel));
  shared_->reloads_ok.fetch_add(1, std::memory_order_relaxed);
  // A reload made inside a read-side section (a Reader alive on this thread) cannot wait for
  // a grace period: the old core then waits for the next reload or the router's end.
  shared_->ReclaimLocked();
  return Status::Ok();
}

void Router::CountFailedReload() const noexcept {
  shared_->reloads_failed.fetch_add(1, std::memory_order_relaxed);
}

void Router::SetCounting(bool on) noexcept {
  shared_->counting.store(on, std::memory_order_relaxed);
}

Ruleset Router::rules() const {
  CoreReader core(*shared_);
  return core->rules;
}

std::shared_ptr<const Resolver> Router::resolver() const {
  CoreReader core(*shared_);
  return core->resolver;
}

void Resolution::SetAddress(std::string_view addr) noexcept {
  std::size_t n = addr.size() < kMaxAddressBytes ? addr.size() : kMaxAddressBytes;
  internal::CopyBytes(address.data(), addr.data(), n);
  address[n] = '\0';
  address_size = static_cast<std::uint16_t>(n);
}

void Resolution::SetCell(const Cell& cell, Source from) noexcept {
  cell_id = cell.id;
  SetAddress(cell.address);
  source = from;
}

template <typename R>
void Router::Resolve(const R& resolver, Resolver::Session& session, Decision* d) noexcept {
  Resolution& r = d->resolution_;
  r.Clear();
  const Outcome& o = d->outcome_;
  switch (o.kind()) {
    case Outcome::Kind::kRejected:
      return;  // no cell: the caller answers 400
    case Outcome::Kind::kNoMatch:
      resolver.ResolveLegacy(session, &r);
      r.fallback = Fallback::kNoRuleMatched;
      return;
    case Outcome::Kind::kMatched:
      break;
  }
  if (o.action() == Action::kProxy) {
    if (o.proxy_address().empty()) {
      resolver.ResolveLegacy(session, &r);
      if (r.source == Source::kFallback)
        r.source = Source::kCellList;  // the rule asked for the legacy cell: not a fallback
    } else {
      r.SetAddress(o.proxy_address());
      r.source = Source::kProxy;
    }
    return;
  }
  resolver.Resolve(session, o.type(), o.value(), &r);
}

namespace {
// A claim that nobody owns (the Topology Service's NOT_FOUND) does not decide the request:
// evaluation goes on with the rules below it, as GitLab's router does for an unclaimed path.
bool FallsThrough(const Decision& d) {
  return d.outcome().matched() && IsClaim(d.type()) && d.fallback() == Fallback::kUnknownClaim;
}

std::uint64_t NowNs() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}
}  // namespace

template <typename R>
void Router::RouteWith(const Core& core, const R& resolver, const RequestView& request,
                       Decision* out, bool counting, Attempt attempt) noexcept {
  internal::DecisionMetrics::Ticket ticket{nullptr, false};
  if (counting) ticket = core.metrics.Begin();
  const std::uint64_t start = ticket.timed ? NowNs() : 0;
  Resolver::Session session;
  session.in_read_section_ = true;  // `core` is read inside one, for as long as the session
  resolver.Begin(&session);
  // One pass over the request serves the first evaluation and every fall-through.
  RuleEvaluator::Pass pass(request);
  RuleEvaluator::Evaluate(core.rules, &pass, 0, &out->outcome_);
  Resolve(resolver, session, out);
  while (FallsThrough(*out)) {
    RuleEvaluator::Evaluate(core.rules, &pass,
                            static_cast<std::size_t>(out->outcome_.rule_index()) + 1,
                            &out->outcome_);
    Resolve(resolver, session, out);
    if (out->outcome_.kind() == Outcome::Kind::kNoMatch) {
      out->resolution_.fallback = Fallback::kUnknownClaim;
    }
  }
  resolver.End(&session);
  if (PendingClaim(*out)) {
    if (attempt == Attempt::kFirst) return;  // decided again once the answer is in: counted then
    if (attempt == Attempt::kLast)
      out->resolution_.fallback = Fallback::kUnavailable;  // out of time
  }
  if (counting) core.metrics.Count(ticket, *out);
  if (ticket.timed) core.metrics.ObserveNs(ticket, NowNs() - start);
}

void Router::RouteAttempt(const RequestView& request, Decision* out,
                          Attempt attempt) const noexcept {
  CoreReader core(*shared_);
  const bool counting = shared_->counting.load(std::memory_order_relaxed);
  if (core->table_resolver != nullptr) {
    RouteWith(*core, *core->table_resolver, request, out, counting, attempt);
  } else {
    RouteWith(*core, *core->resolver, request, out, counting, attempt);
  }
}

void Router::Route(const RequestView& request, Decision* out) const noexcept {
  RouteAttempt(request, out, Attempt::kOnly);
}

bool Router::PendingClaim(const Decision& d) noexcept {
  return d.outcome().matched() && d.fallback() == Fallback::kPending;
}

Decision Router::RouteWait(const RequestView& request, std::chrono::milliseconds deadline) const {
  Decision d;
  RouteWait(request, deadline, &d);
  return d;
}

void Router::RouteWait(const RequestView& request, std::chrono::milliseconds deadline,
                       Decision* out) const {
  RouteAttempt(request, out, Attempt::kFirst);
  if (!PendingClaim(*out)) return;
  resolver()->Wait(out->type(), out->value(), deadline);
  RouteAttempt(request, out, Attempt::kLast);
}

void Router::RouteAsync(const RequestView& request,
                        std::function<void(const Decision&)> done) const {
  Decision d;
  RouteAttempt(request, &d, Attempt::kFirst);
  if (!PendingClaim(d)) {
    done(d);
    return;
  }
  // Own the request: the caller's memory may be gone when the answer arrives.
  auto owned = std::make_shared<Request>();
  owned->method = std::string(request.method);
  owned->host = std::string(request.host);
  owned->path = std::string(request.path);
  owned->query = std::string(request.query);
  for (const Header& h : request.headers)
    owned->AddHeader(std::string(h.name), std::string(h.value));
  for (const Header& c : request.cookies)
    owned->AddCookie(std::string(c.name), std::string(c.value));
  Router self = *this;
  resolver()->WhenResolved(d.type(), d.value(), [self, owned, done = std::move(done)] {
    Decision again;
    self.RouteAttempt(owned->view(), &again, Attempt::kLast);
    done(again);
  });
}

Decision Router::Route(const RequestView& request) const noexcept {
  Decision d;
  Route(request, &d);
  return d;
}

Router::Explained Router::Explain(const RequestView& request) const {
  CoreReader core(*shared_);
  const Ruleset& rules = core->rules;
  Resolver::Session session;
  session.in_read_section_ = true;
  core->resolver->Begin(&session);
  Explained e{rules.Explain(request), Decision()};
  e.decision.outcome_ = e.rules.outcome;
  Resolve(*core->resolver, session, &e.decision);
  while (FallsThrough(e.decision)) {
    e.rules.rules.back().reason = "matched, but no cell owns " +
                                  std::string(ClassifyTypeName(e.decision.type())) + " '" +
                                  std::string(e.decision.value()) + "': trying the next rules";
    Explanation rest =
        rules.Explain(request, static_cast<std::size_t>(e.decision.outcome_.rule_index()) + 1);
    e.rules.rules.insert(e.rules.rules.end(), rest.rules.begin(), rest.rules.end());
    e.rules.outcome = rest.outcome;
    e.decision.outcome_ = rest.outcome;
    Resolve(*core->resolver, session, &e.decision);
    if (rest.outcome.kind() == Outcome::Kind::kNoMatch) {
      e.decision.resolution_.fallback = Fallback::kUnknownClaim;
    }
  }
  core->resolver->End(&session);
  return e;
}

std::string Router::Metrics() const {
  std::string text;
  internal::PromWriter w(&text);
  std::shared_ptr<const Resolver> resolver;
  {
    std::lock_guard<std::mutex> lock(shared_->writer);  // no core is freed meanwhile
    internal::DecisionTotals totals = shared_->carried;
    for (const Core* c : shared_->retired) c->metrics.AddTo(&totals);
    const Core* current = shared_->current.load(std::memory_order_acquire);
    current->metrics.AddTo(&totals);
    resolver = current->resolver;
    totals.Write(w);
  }
  w.Family("cellroute_reloads_total", "counter", "Configuration reloads, by result.");
  w.Sample("cellroute_reloads_total", {{"result", "success"}},
           shared_->reloads_ok.load(std::memory_order_relaxed));
  w.Sample("cellroute_reloads_total", {{"result", "failure"}},
           shared_->reloads_failed.load(std::memory_order_relaxed));
  resolver->AppendMetrics(&text);
  w.Family("cellroute_build_info", "gauge", "The cellroute library in this process.");
  w.Sample("cellroute_build_info", {{"version", CR_VERSION_STRING}}, std::uint64_t{1});
  return text;
}

std::string Router::Explained::ToJson() const {
  nlohmann::json trace = nlohmann::json::array();
  for (const auto& t : rules.rules) {
    const char* result = t.result == Outcome::Kind::kMatched    ? "matched"
                         : t.result == Outcome::Kind::kRejected ? "rejected"
                                                                : "no_match";
    trace.push_back({{"rule", t.rule_id}, {"result", result}, {"reason", t.reason}});
  }
  return internal::DumpJson(
      {{"trace", trace}, {"decision", nlohmann::json::parse(decision.ToJson())}});
}

std::string Decision::ToJson() const {
  nlohmann::json j;
  auto str = [](std::string_view s) { return std::string(s); };
  j["rule"] = str(rule_id());
  j["result"] = rejected() ? "rejected" : outcome_.matched() ? "matched" : "no_match";
  j["action"] = str(action_header());
  j["type"] = str(type_header());
  j["value"] = str(value());
  if (cell_id() != 0) {
    j["cell_id"] = cell_id();
  } else {
    j["cell_id"] = nullptr;
  }
  j["address"] = str(address());
  j["source"] = str(SourceName(source()));
  if (resolution_.age_ms != 0) j["age_ms"] = resolution_.age_ms;
  if (fallback() != Fallback::kNone) j["fallback"] = str(FallbackName(fallback()));
  if (rejected()) {
    j["status"] = 400;
    j["reason"] = str(outcome_.reason());
  }
  nlohmann::json vars = nlohmann::json::object();
  for (std::size_t i = 0; i < outcome_.variable_count(); ++i) {
    auto v = outcome_.variable(i);
    vars[str(v.name)] = str(v.value);
  }
  j["variables"] = vars;
  return internal::DumpJson(j);
}

}  // namespace cellroute
