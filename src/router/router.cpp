#include "cellroute/router.h"

#include <nlohmann/json.hpp>

#include "cellroute/topology_service.h"
#include "common/json.h"
#include "common/text.h"

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

Result<Router> Router::Create(Ruleset rules, std::shared_ptr<const Resolver> resolver) {
  if (!resolver) return Status::Invalid("router: no resolver");
  return Router(std::move(rules), std::move(resolver));
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

void Router::Resolve(Resolver::Session& session, Decision* d) const noexcept {
  Resolution& r = d->resolution_;
  r.Clear();
  const Outcome& o = d->outcome_;
  switch (o.kind()) {
    case Outcome::Kind::kRejected:
      return;  // no cell: the caller answers 400
    case Outcome::Kind::kNoMatch:
      resolver_->ResolveLegacy(session, &r);
      r.fallback = Fallback::kNoRuleMatched;
      return;
    case Outcome::Kind::kMatched:
      break;
  }
  if (o.action() == Action::kProxy) {
    if (o.proxy_address().empty()) {
      resolver_->ResolveLegacy(session, &r);
      if (r.source == Source::kFallback)
        r.source = Source::kCellList;  // the rule asked for the legacy cell: not a fallback
    } else {
      r.SetAddress(o.proxy_address());
      r.source = Source::kProxy;
    }
    return;
  }
  resolver_->Resolve(session, o.type(), o.value(), &r);
}

namespace {
// A claim that nobody owns (the Topology Service's NOT_FOUND) does not decide the request:
// evaluation goes on with the rules below it, as GitLab's router does for an unclaimed path.
bool FallsThrough(const Decision& d) {
  return d.outcome().matched() && IsClaim(d.type()) && d.fallback() == Fallback::kUnknownClaim;
}
}  // namespace

void Router::Route(const RequestView& request, Decision* out) const noexcept {
  Resolver::Session session;
  resolver_->Begin(&session);
  rules_.Evaluate(request, &out->outcome_);
  Resolve(session, out);
  while (FallsThrough(*out)) {
    rules_.Evaluate(request, &out->outcome_,
                    static_cast<std::size_t>(out->outcome_.rule_index()) + 1);
    Resolve(session, out);
    if (out->outcome_.kind() == Outcome::Kind::kNoMatch) {
      out->resolution_.fallback = Fallback::kUnknownClaim;
    }
  }
  resolver_->End(&session);
}

bool Router::PendingClaim(const Decision& d) noexcept {
  return d.outcome().matched() && d.fallback() == Fallback::kPending;
}

Decision Router::RouteWait(const RequestView& request, std::chrono::milliseconds deadline) const {
  Decision d = Route(request);
  if (!PendingClaim(d)) return d;
  resolver_->Wait(d.type(), d.value(), deadline);
  Route(request, &d);
  if (PendingClaim(d)) d.resolution_.fallback = Fallback::kUnavailable;  // out of time
  return d;
}

void Router::RouteAsync(const RequestView& request,
                        std::function<void(const Decision&)> done) const {
  Decision d = Route(request);
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
  resolver_->WhenResolved(d.type(), d.value(), [self, owned, done = std::move(done)] {
    Decision again = self.Route(owned->view());
    if (PendingClaim(again)) again.resolution_.fallback = Fallback::kUnavailable;
    done(again);
  });
}

Decision Router::Route(const RequestView& request) const noexcept {
  Decision d;
  Route(request, &d);
  return d;
}

Router::Explained Router::Explain(const RequestView& request) const {
  Resolver::Session session;
  resolver_->Begin(&session);
  Explained e{rules_.Explain(request), Decision()};
  e.decision.outcome_ = e.rules.outcome;
  Resolve(session, &e.decision);
  while (FallsThrough(e.decision)) {
    e.rules.rules.back().reason = "matched, but no cell owns " +
                                  std::string(ClassifyTypeName(e.decision.type())) + " '" +
                                  std::string(e.decision.value()) + "': trying the next rules";
    Explanation rest =
        rules_.Explain(request, static_cast<std::size_t>(e.decision.outcome_.rule_index()) + 1);
    e.rules.rules.insert(e.rules.rules.end(), rest.rules.begin(), rest.rules.end());
    e.rules.outcome = rest.outcome;
    e.decision.outcome_ = rest.outcome;
    Resolve(session, &e.decision);
    if (rest.outcome.kind() == Outcome::Kind::kNoMatch) {
      e.decision.resolution_.fallback = Fallback::kUnknownClaim;
    }
  }
  resolver_->End(&session);
  return e;
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
