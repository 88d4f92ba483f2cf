// Hot reload and metrics while requests route: a reload swaps the rules and the cells together
// (a request sees the old pair or the new, never one of each), a bad configuration changes
// nothing, and the counts add up to what was routed whatever the reloads in between.
#include <cellroute/router.h>
#include <cellroute/topology_service.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace cellroute;

namespace {

// Version `v` of a configuration: rule "rule-v" sends everything to cell 5, whose address in
// that version's topology is "v:5".
RouterConfig Version(const std::string& v) {
  RouterConfig c;
  c.rules_text = R"([{"id": "rule-)" + v +
                 R"(", "action": "classify", "classify": {"type": "CELL_ID", "value": "5"}}])";
  c.topology_text = "[[cells]]\nid = 1\naddress = \"legacy:1\"\n[[cells]]\nid = 5\naddress = \"" +
                    v + ":5\"\n";
  return c;
}

// The value of one sample line of the metrics text ("name{labels} value"), or -1.
double Sample(const std::string& metrics, const std::string& line_start) {
  std::size_t at = metrics.find("\n" + line_start);
  if (at == std::string::npos) return -1;
  at += 1 + line_start.size();
  return std::stod(metrics.substr(at, metrics.find('\n', at) - at));
}

}  // namespace

TEST_CASE("a thousand reloads while four threads route: every decision is one version whole") {
  auto built = BuildRouter(Version("a"));
  REQUIRE(built.ok());
  BuiltRouter& b = built.value();
  std::atomic<bool> stop{false};
  std::atomic<long> routed{0}, torn{0};
  std::mutex mu;
  std::map<std::string, long> seen;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      Request req;
      req.path = "/";
      std::map<std::string, long> mine;
      Decision d;
      while (!stop.load(std::memory_order_relaxed)) {
        b.router.Route(req.view(), &d);
        std::string rule(d.rule_id()), address(d.address());
        // rule-a goes with a:5, rule-b with b:5; anything else is a torn reload.
        if (rule.size() != 6 || address != rule.substr(5) + ":5") ++torn;
        ++mine[rule];
        ++routed;
      }
      std::lock_guard<std::mutex> lock(mu);
      for (auto& [k, v] : mine) seen[k] += v;
    });
  }
  for (int i = 0; i < 1000; ++i) {
    REQUIRE(ReloadRouter(&b, Version(i % 2 ? "a" : "b")).ok());
  }
  stop = true;
  for (auto& t : threads) t.join();
  CHECK(torn.load() == 0);
  CHECK(seen.size() == 2);
  std::string metrics = b.router.Metrics();
  CHECK(Sample(metrics, "cellroute_reloads_total{result=\"success\"} ") == 1000);
  // Counts made on a version that has since been replaced are kept.
  double a = Sample(metrics, R"(cellroute_decisions_total{rule="rule-a",action="classify",type="CELL_ID",source="cell_list",fallback="none"} )");
  double bb = Sample(metrics, R"(cellroute_decisions_total{rule="rule-b",action="classify",type="CELL_ID",source="cell_list",fallback="none"} )");
  CHECK(a == static_cast<double>(seen["rule-a"]));
  CHECK(bb == static_cast<double>(seen["rule-b"]));
  CHECK(a + bb == static_cast<double>(routed.load()));
}

TEST_CASE("a reload that fails changes nothing, reports every error and is counted") {
  auto built = BuildRouter(Version("a"));
  REQUIRE(built.ok());
  RouterConfig bad = Version("b");
  bad.rules_text = "[{\"id\": \"x\",\n \"action\" 1}]";
  bad.topology_text = "[[cells]]\nid = 1\n";  // no address
  Status s = ReloadRouter(&built.value(), bad);
  REQUIRE_FALSE(s.ok());
  CHECK(s.code() == StatusCode::kInvalid);
  CHECK(s.message().find("<rules>:2:") != std::string::npos);
  CHECK(s.message().find("<topology>") != std::string::npos);
  Request req;
  req.path = "/";
  CHECK(built.value().router.Route(req.view()).address() == "a:5");
  // A file that cannot be read is unavailable, as when the router is built.
  RouterConfig missing = Version("b");
  missing.rules_text.reset();
  missing.rules_path = "/nonexistent/rules.json";
  Status m = ReloadRouter(&built.value(), missing);
  CHECK(m.code() == StatusCode::kUnavailable);
  CHECK(m.code() == BuildRouter(missing).status().code());
  std::string metrics = built.value().router.Metrics();
  CHECK(Sample(metrics, "cellroute_reloads_total{result=\"failure\"} ") == 2);
  CHECK(Sample(metrics, "cellroute_reloads_total{result=\"success\"} ") == 0);
}

TEST_CASE("metrics read while threads route add up to what they routed") {
  auto router = Router::FromDefaults();
  REQUIRE(router.ok());
  std::atomic<bool> stop{false};
  std::atomic<long> routed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      Request req;
      req.path = "/gitlab-org/gitlab";
      Decision d;
      while (!stop.load(std::memory_order_relaxed)) {
        router->Route(req.view(), &d);
        ++routed;
      }
    });
  }
  for (int i = 0; i < 20 || routed.load() < 10'000; ++i) {
    CHECK(router->Metrics().find("# TYPE cellroute_decisions_total counter\n") != std::string::npos);
    std::this_thread::yield();
  }
  stop = true;
  for (auto& t : threads) t.join();
  std::string metrics = router->Metrics();
  CHECK(Sample(metrics, R"(cellroute_decisions_total{rule="top_level_namespace",action="classify",type="route",source="claims_file",fallback="none"} )") ==
        static_cast<double>(routed.load()));
  double timed = Sample(metrics, "cellroute_route_duration_seconds_count ");
  CHECK(timed >= static_cast<double>(routed.load() / 64 - 3));
  CHECK(timed <= static_cast<double>(routed.load()));
}

TEST_CASE("a router frozen at a fork reloads its rules with the configuration it was built from") {
  // A child forked after its parent used gRPC routes from the parent's table, frozen; the
  // configuration it reloads still names the service it was built with. Only the rules change.
  RouterConfig a = Version("a");
  auto built = BuildRouter(a);
  REQUIRE(built.ok());
  BuiltRouter frozen{built.value().router, nullptr, "frozen at fork() (test)", nullptr};
  RouterConfig b = Version("b");
  b.service.address = "127.0.0.1:1";  // as the child's configuration still says
  b.topology_text = "[[cells]]\nid = 1\naddress = \"elsewhere:1\"\n";  // not applied
  REQUIRE(ReloadRouter(&frozen, b).ok());
  Request req;
  req.path = "/";
  Decision d = frozen.router.Route(req.view());
  CHECK(d.rule_id() == "rule-b");
  CHECK(d.address() == "a:5");  // the cells it had, not the configuration's

  // A router without a service cannot gain one by a reload, and says so.
  Status s = ReloadRouter(&built.value(), b);
  REQUIRE_FALSE(s.ok());
  CHECK(s.message().find("cannot add one") != std::string::npos);
}

TEST_CASE("a request that waits for a claim is counted once, as it was finally decided") {
  // A resolver whose claims stay pending: RouteWait and RouteAsync route twice, and the
  // metrics must count one decision per request, with the fallback the caller saw.
  struct Pending : Resolver {
    void Begin(Session*) const noexcept override {}
    void End(Session*) const noexcept override {}
    void Resolve(Session& s, ClassifyType, std::string_view, Resolution* out) const noexcept override {
      ResolveLegacy(s, out);
      out->fallback = Fallback::kPending;
    }
    void ResolveLegacy(Session&, Resolution* out) const noexcept override {
      out->cell_id = 1;
      out->SetAddress("legacy:1");
      out->source = Source::kFallback;
    }
  };
  auto rules = Ruleset::Parse(
      R"json([{"id": "ns", "match": {"type": "path", "regex_value": "^/(?<top>[^/]+)"},
               "action": "classify", "classify": {"type": "route", "value": "${top}"}}])json",
      "pending.json");
  REQUIRE(rules.ok());
  auto router = Router::Create(rules.value(), std::make_shared<Pending>());
  REQUIRE(router.ok());
  Request req;
  req.path = "/group/x";
  CHECK(router->Route(req.view()).fallback() == Fallback::kPending);
  CHECK(router->RouteWait(req.view(), std::chrono::milliseconds(1)).fallback() ==
        Fallback::kUnavailable);
  Fallback async = Fallback::kNone;
  router->RouteAsync(req.view(), [&](const Decision& d) { async = d.fallback(); });
  CHECK(async == Fallback::kUnavailable);
  std::string metrics = router->Metrics();
  const std::string ns = R"(cellroute_decisions_total{rule="ns",action="classify",type="route",source="fallback",fallback=")";
  CHECK(Sample(metrics, ns + R"(pending"} )") == 1);      // Route's own answer
  CHECK(Sample(metrics, ns + R"(unavailable"} )") == 2);  // RouteWait and RouteAsync, once each
}
