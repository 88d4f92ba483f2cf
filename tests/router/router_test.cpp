#include <cellroute/router.h>
#include <cellroute/table.h>
#include <cellroute/token.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/test_util.h"

using cellroute::Action;
using cellroute::ClassifyType;
using cellroute::Decision;
using cellroute::Fallback;
using cellroute::Request;
using cellroute::Router;
using cellroute::Source;
using namespace cellroute::testing;

namespace {

Router Defaults() {
  auto r = Router::FromDefaults();
  INFO(r.status().message());
  REQUIRE(r.ok());
  return std::move(r).value();
}

Decision RouteTarget(const Router& router, const std::string& target,
                     std::vector<std::pair<std::string, std::string>> headers = {}) {
  Request r;
  r.SetTarget(target);
  for (auto& [n, v] : headers) r.AddHeader(n, v);
  return router.Route(r.view());
}

std::string Token(std::int64_t cell) {
  cellroute::token::EncodeOptions opt;
  opt.prefix = "glpat-";
  opt.fields = {{"c", cell}, {"o", 1}};
  return cellroute::token::Encode(opt).value();
}

}  // namespace

TEST_CASE("the default router answers each kind of classification") {
  Router router = Defaults();

  auto d = RouteTarget(router, "/gitlab-org/gitlab");
  CHECK(d.rule_id() == "top_level_namespace");
  CHECK(d.cell_id() == 2);
  CHECK(d.address() == "cell-2.gitlab.example.com:443");
  CHECK(d.source() == Source::kClaims);
  CHECK(d.fallback() == Fallback::kNone);
  CHECK(d.action_header() == "classify");
  CHECK(d.type_header() == "route");

  d = RouteTarget(router, "/o/acme-corp/x");
  CHECK(d.cell_id() == 3);
  CHECK(d.type_header() == "organization_path");

  d = RouteTarget(router, "/api/v4/projects", {{"Private-Token", Token(3)}});
  CHECK(d.rule_id() == "session_token_header_private_token");
  CHECK(d.cell_id() == 3);
  CHECK(d.source() == Source::kCellList);
  CHECK(d.type_header() == "CELL_ID");

  d = RouteTarget(router, "/dashboard", {{"Cookie", "_gitlab_session=cell-2-abcdef"}});
  CHECK(d.cell_id() == 2);
  CHECK(d.type_header() == "SESSION_PREFIX");

  d = RouteTarget(router, "/users/sign_in");
  CHECK(d.rule_id() == "fallback");
  CHECK(d.cell_id() == 1);
  CHECK(d.action_header() == "proxy");
  CHECK(d.type_header() == "");
  CHECK(d.source() == Source::kCellList);
}

TEST_CASE("unknown cells fall back to the legacy cell and say so") {
  Router router = Defaults();
  auto d = RouteTarget(router, "/help", {{"Cookie", "_gitlab_session=cell-9-abc"}});
  CHECK(d.rule_id() == "session_cookie");
  CHECK(d.value() == "cell-9");
  CHECK(d.cell_id() == 1);
  CHECK(d.source() == Source::kFallback);
  CHECK(d.fallback() == Fallback::kUnknownCell);

  d = RouteTarget(router, "/api/v4/user", {{"private-token", Token(99)}});
  CHECK(d.value() == "99");
  CHECK(d.cell_id() == 1);
  CHECK(d.fallback() == Fallback::kUnknownCell);
}

TEST_CASE("an unclaimed path falls through to the token and cookie rules") {
  Router router = Defaults();
  auto d =
      RouteTarget(router, "/nobody-owns-this/project", {{"Cookie", "_gitlab_session=cell-3-abc"}});
  CHECK(d.rule_id() == "session_cookie");
  CHECK(d.cell_id() == 3);
  d = RouteTarget(router, "/nobody-owns-this/project");
  CHECK(d.rule_id() == "fallback");
  CHECK(d.cell_id() == 1);
  // The first evaluation stops at the namespace rule before any header name is looked up; the
  // fall-through resumes the same pass and looks them up then.
  d = RouteTarget(router, "/nobody-owns-this/project",
                  {{"Private-Token", Token(2)}, {"Cookie", "_gitlab_session=cell-3-abc"}});
  CHECK(d.rule_id() == "session_token_header_private_token");
  CHECK(d.cell_id() == 2);
  // A cookie name inside another cookie's value makes a candidate, never a match.
  d = RouteTarget(router, "/nobody-owns-this/project",
                  {{"Cookie", "note=force-cell; xforce-cell=cell-2; _gitlab_session=cell-3-abc"}});
  CHECK(d.rule_id() == "session_cookie");
  CHECK(d.cell_id() == 3);

  auto e = router.Explain([] {
    static Request r;
    r.SetTarget("/nobody-owns-this");
    return r.view();
  }());
  bool noted = false;
  for (const auto& t : e.rules.rules) {
    if (t.rule_id == "top_level_namespace") {
      noted = t.reason.find("no cell owns route 'nobody-owns-this'") != std::string::npos;
    }
  }
  CHECK(noted);
  CHECK(e.decision.rule_id() == "fallback");
}

TEST_CASE("with no rule matching and no fallback rule, the legacy cell answers") {
  auto rules = MustParse(R"J([{"id": "only", "match": {"type": "header", "name": "x"},
                              "action": "classify", "classify": {"type": "CELL_ID", "value": "2"}}])J");
  auto topo =
      cellroute::Topology::FromCells({{5, "legacy:80", "", {}}, {2, "two:80", "", {}}}, "t");
  auto router = Router::Create(
      rules, cellroute::MakeStaticResolver(topo.value(), cellroute::Claims::Empty()));
  REQUIRE(router.ok());
  Request r;
  auto d = router->Route(r.view());
  CHECK(d.rule_id().empty());
  CHECK(d.cell_id() == 5);
  CHECK(d.fallback() == Fallback::kNoRuleMatched);
  CHECK(d.source() == Source::kFallback);
  r.AddHeader("x", "1");
  CHECK(router->Route(r.view()).cell_id() == 2);
}

TEST_CASE("a rejected request has no cell") {
  Router router = Defaults();
  std::string tok = Token(2);
  std::string bad = tok.substr(0, tok.size() - 9) + "zz" + tok.substr(tok.size() - 7);
  auto d = RouteTarget(router, "/api/v4/user", {{"private-token", bad}});
  CHECK(d.rejected());
  CHECK(d.cell_id() == 0);
  CHECK(d.address().empty());
  CHECK(d.source() == Source::kNone);
  auto j = nlohmann::json::parse(d.ToJson());
  CHECK(j["status"] == 400);
  CHECK(j["result"] == "rejected");
  CHECK(j["cell_id"].is_null());
}

TEST_CASE("a proxy rule with an address sends there") {
  auto rules = MustParse(R"J([{"id": "canary", "match": {"type": "header", "name": "x-canary"},
                              "action": "proxy", "proxy": {"address": "canary.internal:8443"}}])J");
  auto topo = cellroute::Topology::FromCells({{1, "legacy:80", "", {}}}, "t");
  auto router = Router::Create(
      rules, cellroute::MakeStaticResolver(topo.value(), cellroute::Claims::Empty()));
  Request r;
  r.AddHeader("X-Canary", "1");
  auto d = router->Route(r.view());
  CHECK(d.address() == "canary.internal:8443");
  CHECK(d.source() == Source::kProxy);
  CHECK(d.cell_id() == 0);
}

TEST_CASE("the router resolves through whatever Resolver it is given") {
  struct Recording : cellroute::Resolver {
    mutable std::vector<std::pair<ClassifyType, std::string>> calls;
    mutable int open_sessions = 0, sessions = 0;
    void Begin(Session*) const noexcept override {
      ++open_sessions;
      ++sessions;
    }
    void End(Session*) const noexcept override { --open_sessions; }
    void Resolve(Session&, ClassifyType type, std::string_view value,
                 cellroute::Resolution* out) const noexcept override {
      calls.emplace_back(type, std::string(value));
      out->cell_id = 42;
      out->SetAddress("from-resolver:1");
      out->source = Source::kTable;
      out->age_ms = 1500;
    }
    void ResolveLegacy(Session&, cellroute::Resolution* out) const noexcept override {
      out->cell_id = 1;
      out->SetAddress("legacy:1");
      out->source = Source::kFallback;
    }
  };
  auto resolver = std::make_shared<Recording>();
  auto rules = cellroute::Ruleset::Parse(cellroute::defaults::RulesJson(), "defaults").value();
  auto router = Router::Create(rules, resolver).value();
  auto d = RouteTarget(router, "/some-group/x");
  REQUIRE(resolver->calls.size() == 1);
  CHECK(resolver->calls[0].first == ClassifyType::kClaimRoute);
  CHECK(resolver->calls[0].second == "some-group");
  CHECK(d.cell_id() == 42);
  CHECK(d.source() == Source::kTable);
  CHECK(d.resolution().age_ms == 1500);
  CHECK(resolver->sessions == 1);
  CHECK(resolver->open_sessions == 0);

  // A reload can swap the library's table resolver (called directly, ADR 0019) for this one
  // and back: each core routes through the resolver it was built with.
  auto topo =
      cellroute::Topology::FromCells({{5, "legacy:80", "", {}}, {9, "nine:80", "", {}}}, "t");
  REQUIRE(topo.ok());
  auto claims =
      cellroute::Claims::Parse(R"J({"route": {"some-group": 9}})J", "claims.json", topo.value());
  REQUIRE(claims.ok());
  REQUIRE(router.Reload(rules, cellroute::MakeStaticResolver(topo.value(), claims.value())).ok());
  d = RouteTarget(router, "/some-group/x");
  CHECK(d.cell_id() == 9);
  CHECK(d.address() == "nine:80");
  CHECK(d.source() == Source::kClaims);
  CHECK(resolver->calls.size() == 1);
  REQUIRE(router.Reload(rules, resolver).ok());
  d = RouteTarget(router, "/some-group/x");
  CHECK(d.cell_id() == 42);
  CHECK(resolver->calls.size() == 2);
  CHECK(resolver->open_sessions == 0);
}

TEST_CASE("decisions serialize to JSON with the fields tools read") {
  Router router = Defaults();
  auto j = nlohmann::json::parse(RouteTarget(router, "/gitlab-org/gitlab").ToJson());
  CHECK(j["rule"] == "top_level_namespace");
  CHECK(j["action"] == "classify");
  CHECK(j["type"] == "route");
  CHECK(j["value"] == "gitlab-org");
  CHECK(j["cell_id"] == 2);
  CHECK(j["address"] == "cell-2.gitlab.example.com:443");
  CHECK(j["source"] == "claims_file");
  CHECK(j["variables"]["route"] == "gitlab-org");
  CHECK_FALSE(j.contains("fallback"));
}

TEST_CASE("configuration errors surface from FromFiles") {
  auto r = Router::FromFiles({"", CELLROUTE_EXAMPLES_DIR "/topology.toml",
                              CELLROUTE_TESTDATA_DIR "/claims_unknown_cell.json"});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.status().message(), Catch::Matchers::Contains("cell 7 is not in the topology"));
  CHECK_FALSE(Router::FromFiles({"/missing.json", "", ""}).ok());
}

TEST_CASE("many threads share one router and agree with one thread") {
  Router router = Defaults();
  std::vector<Request> requests(6);
  requests[0].SetTarget("/gitlab-org/x");
  requests[1].SetTarget("/o/acme-corp/y");
  requests[2].AddHeader("private-token", Token(3));
  requests[3].AddHeader("cookie", "_gitlab_session=cell-2-aa");
  requests[4].SetTarget("/api/v4/x");
  requests[5].AddHeader("cookie", "force-cell=cell-3");
  std::vector<std::int64_t> expected;
  for (auto& r : requests) expected.push_back(router.Route(r.view()).cell_id());
  CHECK(expected == std::vector<std::int64_t>{2, 3, 3, 2, 1, 3});

  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20000; ++i) {
        std::size_t k = static_cast<std::size_t>(i + t) % requests.size();
        if (router.Route(requests[k].view()).cell_id() != expected[k]) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(mismatches == 0);
}

TEST_CASE("the router resolves claims through a route table and reports the age") {
  static std::atomic<std::int64_t> now{5'000'000};
  cellroute::TableOptions options;
  options.now_ms = [] { return now.load(); };
  auto table = std::make_shared<cellroute::RouteTable>(options);
  cellroute::RouteTable::Batch b;
  b.SetTopology(cellroute::Topology::FromCells(
                    {{1, "legacy:1", "", {}}, {2, "two:1", "cell-2", {}}, {3, "three:1", "", {}}},
                    "t")
                    .value());
  b.Put(ClassifyType::kClaimRoute, "static-group", 3);
  b.Put(ClassifyType::kClaimRoute, "cached-group", 2, std::chrono::minutes(60),
        std::chrono::minutes(10));
  b.PutNegative(ClassifyType::kClaimRoute, "nobody", std::chrono::minutes(5));
  table->Apply(std::move(b));
  auto rules = cellroute::Ruleset::Parse(cellroute::defaults::RulesJson(), "defaults").value();
  auto router = Router::Create(rules, cellroute::MakeTableResolver(table)).value();

  now += 90'000;
  auto d = RouteTarget(router, "/static-group/x");
  CHECK(d.cell_id() == 3);
  CHECK(d.source() == Source::kClaims);
  d = RouteTarget(router, "/cached-group/x");
  CHECK(d.cell_id() == 2);
  CHECK(d.source() == Source::kTable);
  CHECK(d.resolution().age_ms == 90'000);
  auto j = nlohmann::json::parse(d.ToJson());
  CHECK(j["source"] == "route_table");
  CHECK(j["age_ms"] == 90'000);

  // A negative entry is a known "nobody owns it": the rules below decide.
  d = RouteTarget(router, "/nobody/x", {{"cookie", "_gitlab_session=cell-2-ab"}});
  CHECK(d.rule_id() == "session_cookie");
  CHECK(d.cell_id() == 2);

  // A new version is picked up by the next request; the cell list moves with it.
  table->Put(ClassifyType::kClaimRoute, "cached-group", 3, std::chrono::minutes(60));
  CHECK(RouteTarget(router, "/cached-group/x").cell_id() == 3);
  table->PurgeCell(3);
  d = RouteTarget(router, "/cached-group/x");
  CHECK(d.rule_id() == "fallback");
  CHECK(d.cell_id() == 1);

  // Expired answers no longer route.
  table->Put(ClassifyType::kClaimRoute, "short-lived", 2, std::chrono::seconds(30));
  CHECK(RouteTarget(router, "/short-lived").cell_id() == 2);
  now += 31'000;
  CHECK(RouteTarget(router, "/short-lived").rule_id() == "fallback");

  // An owner that left the topology is not routed to.
  table->Put(ClassifyType::kClaimRoute, "orphan", 9);
  d = RouteTarget(router, "/orphan");
  CHECK(d.cell_id() == 1);
  CHECK(d.fallback() == Fallback::kUnknownCell);
}

TEST_CASE("a routed request keeps the table version it began with until it ends") {
  // The table's Reader for a request borrows the router's read-side section (ADR 0017). A
  // resolver that pauses in the middle of a request, while a writer erases the claim and frees
  // what it retired, shows that the section holds: the writer's Reclaim waits for the request,
  // and the request resolves from the version it began with (ASan: from memory not yet freed).
  auto table = std::make_shared<cellroute::RouteTable>();
  table->SetTopology(
      cellroute::Topology::FromCells({{1, "legacy:1", "", {}}, {2, "two:1", "", {}}}, "t").value());
  table->Put(ClassifyType::kClaimRoute, "gitlab-org", 2);
  struct Pausing : cellroute::Resolver {
    std::shared_ptr<const cellroute::Resolver> inner;
    std::shared_ptr<cellroute::RouteTable> table;
    mutable std::atomic<bool> erased{false}, reclaimed{false};
    mutable bool paused = false, reclaimed_during = true, in_section = false;
    mutable std::thread writer;
    void Begin(Session* s) const noexcept override {
      in_section = s->in_read_section();
      inner->Begin(s);
    }
    void End(Session* s) const noexcept override { inner->End(s); }
    void Resolve(Session& s, ClassifyType type, std::string_view value,
                 cellroute::Resolution* out) const noexcept override {
      if (!paused) {  // the first request only
        paused = true;
        writer = std::thread([this] {
          table->Erase(ClassifyType::kClaimRoute, "gitlab-org");
          erased = true;
          table->Reclaim();  // a grace period: it waits for the request in flight
          reclaimed = true;
        });
        // (Nothing here may take the table's writer lock: Reclaim holds it while it waits.)
        while (!erased.load()) std::this_thread::yield();
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        reclaimed_during = reclaimed.load();
      }
      inner->Resolve(s, type, value, out);
    }
    void ResolveLegacy(Session& s, cellroute::Resolution* out) const noexcept override {
      inner->ResolveLegacy(s, out);
    }
  };
  auto pausing = std::make_shared<Pausing>();
  pausing->inner = cellroute::MakeTableResolver(table);
  pausing->table = table;
  auto rules = cellroute::Ruleset::Parse(cellroute::defaults::RulesJson(), "defaults").value();
  auto router = Router::Create(rules, pausing).value();

  Decision d = RouteTarget(router, "/gitlab-org/gitlab");
  pausing->writer.join();
  CHECK(pausing->in_section);
  CHECK_FALSE(pausing->reclaimed_during);
  CHECK(pausing->reclaimed.load());
  CHECK(d.rule_id() == "top_level_namespace");
  CHECK(d.cell_id() == 2);  // the version the request began with
  d = RouteTarget(router, "/gitlab-org/gitlab");
  CHECK(d.rule_id() != "top_level_namespace");  // erased: the rules below decide
  CHECK(d.cell_id() == 1);
}

TEST_CASE("routes read a route table that a writer churns and reclaims, each from one version") {
  // The router reads the table inside its own read-side section (no second one per request):
  // a writer that moves claims between cells, replaces the cell list and frees what it
  // retired never frees what a request in flight reads (ASan, TSan), and every decision comes
  // from one version: each version moves every group to one cell, whose address names it.
  auto table = std::make_shared<cellroute::RouteTable>();
  auto cells = [](int version) {
    std::vector<cellroute::Cell> list{{1, "legacy:1", "", {}}};
    for (int id = 2; id <= 4; ++id) {
      list.push_back({id, "cell-" + std::to_string(id) + "-v" + std::to_string(version), "", {}});
    }
    return cellroute::Topology::FromCells(list, "t").value();
  };
  auto publish = [&](int version) {
    cellroute::RouteTable::Batch b;
    b.SetTopology(cells(version));
    for (int g = 0; g < 64; ++g) {
      b.Put(ClassifyType::kClaimRoute, "group-" + std::to_string(g), 2 + version % 3);
    }
    table->Apply(std::move(b));
  };
  publish(0);
  auto rules = cellroute::Ruleset::Parse(cellroute::defaults::RulesJson(), "defaults").value();
  auto router = Router::Create(rules, cellroute::MakeTableResolver(table)).value();

  std::atomic<bool> stop{false};
  std::atomic<int> wrong{0}, routed{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] {
      for (int i = t; !stop.load(std::memory_order_relaxed); ++i) {
        Decision d = RouteTarget(router, "/group-" + std::to_string(i % 64) + "/x");
        std::string want = "cell-" + std::to_string(d.cell_id()) + "-v";
        std::string_view address = d.address();
        int version = std::atoi(std::string(address.substr(want.size())).c_str());
        if (d.source() != Source::kClaims || address.substr(0, want.size()) != want ||
            d.cell_id() != 2 + version % 3) {
          ++wrong;
        }
        ++routed;
      }
    });
  }
  for (int version = 1; version <= 1000; ++version) {
    publish(version);
    if (version % 10 == 0) table->Reclaim();
  }
  stop = true;
  for (auto& th : readers) th.join();
  CHECK(wrong.load() == 0);
  CHECK(routed.load() > 0);
}

TEST_CASE("cell addresses of every length are copied whole into the decision") {
  // Cell n has an address of n bytes, each byte different: a decision for it shows exactly
  // that address, whatever its length.
  std::vector<cellroute::Cell> cells;
  for (int n = 1; n <= 255; ++n) {
    std::string address;
    for (int i = 0; i < n; ++i) address += static_cast<char>('a' + (i * 7 + n) % 26);
    cells.push_back({n, address, "", {}});
  }
  auto rules = MustParse(R"J([{"id": "to",
    "match": {"type": "header", "name": "x-cell", "regex_value": "^(?<id>\\d+)$"},
    "action": "classify", "classify": {"type": "CELL_ID", "value": "${id}"}}])J");
  auto router = Router::Create(
      rules, cellroute::MakeStaticResolver(cellroute::Topology::FromCells(cells, "t").value(),
                                           cellroute::Claims::Empty()));
  REQUIRE(router.ok());
  Decision d;
  for (const auto& cell : cells) {
    Request r;
    r.AddHeader("x-cell", std::to_string(cell.id));
    router->Route(r.view(), &d);
    INFO("cell " << cell.id);
    REQUIRE(d.cell_id() == cell.id);
    CHECK(d.address() == cell.address);
  }
}
