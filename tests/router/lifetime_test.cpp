// What a Decision owns: everything it shows, after the Router and the Ruleset that made it are
// gone. Under AddressSanitizer a view into freed memory fails outright; in other builds the
// freed memory is overwritten before the decision is read.
#include <cellroute/router.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "common/test_util.h"

using namespace cellroute;

namespace {

// Fills freed heap memory with other bytes, so a dangling view reads garbage.
void ChurnHeap() {
  std::vector<std::unique_ptr<char[]>> blocks;
  for (std::size_t size = 16; size <= 64 * 1024; size *= 2) {
    for (int i = 0; i < 64; ++i) {
      blocks.emplace_back(new char[size]);
      std::memset(blocks.back().get(), 'Z', size);
    }
  }
}

constexpr const char* kRules = R"json([
  {"id": "a_rule_id_long_enough_to_live_on_the_heap_not_in_a_small_string_buffer",
   "match": {"type": "path", "regex_value": "^/(?<top>[^/]+)"},
   "action": "classify", "classify": {"type": "route", "value": "${top}"}}])json";

}  // namespace

TEST_CASE("a decision outlives its router and ruleset") {
  Decision d;
  {
    auto rules = Ruleset::Parse(kRules, "lifetime.json");
    REQUIRE(rules.ok());
    auto topology = Topology::ParseToml(defaults::TopologyToml(), "<default topology>");
    REQUIRE(topology.ok());
    auto claims = Claims::Parse(defaults::ClaimsJson(), "<default claims>", topology.value());
    REQUIRE(claims.ok());
    auto router = Router::Create(std::move(rules).value(),
                                 MakeStaticResolver(std::move(topology).value(), claims.value()));
    REQUIRE(router.ok());
    Request req;
    req.SetTarget("/gitlab-org/gitlab");
    d = router->Route(req.view());
  }
  ChurnHeap();
  CHECK(d.rule_id() == "a_rule_id_long_enough_to_live_on_the_heap_not_in_a_small_string_buffer");
  CHECK(d.value() == "gitlab-org");
  CHECK(d.address() == "cell-2.gitlab.example.com:443");
  auto j = nlohmann::json::parse(d.ToJson());
  CHECK(j["rule"] == "a_rule_id_long_enough_to_live_on_the_heap_not_in_a_small_string_buffer");
  CHECK(j["variables"]["top"] == "gitlab-org");
}

TEST_CASE("an outcome copied from an evaluation owns its rule id") {
  Outcome copy;
  {
    Ruleset rules = testing::MustParse(kRules);
    Request req;
    req.SetTarget("/acme/x");
    copy = testing::Evaluate(rules, req);
  }
  ChurnHeap();
  CHECK(copy.rule_id() == "a_rule_id_long_enough_to_live_on_the_heap_not_in_a_small_string_buffer");
  CHECK(copy.value() == "acme");
}

TEST_CASE("rule ids longer than an outcome can carry are refused at load") {
  std::string id(kMaxRuleIdBytes + 1, 'x');
  std::string err = testing::ParseError(
      R"([{"id": ")" + id + R"(", "action": "classify", "classify": {"type": "FIRST_CELL"}}])");
  CHECK_THAT(err, Catch::Contains("id: longer than 128 bytes"));
}

TEST_CASE("a claim from the claims file has no age") {
  auto router = Router::FromDefaults();
  REQUIRE(router.ok());
  Request req;
  req.SetTarget("/gitlab-org/gitlab");
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  Decision d = router->Route(req.view());
  CHECK(d.source() == Source::kClaims);
  CHECK(d.resolution().age_ms == 0);
  CHECK(nlohmann::json::parse(d.ToJson()).contains("age_ms") == false);
}

TEST_CASE("requests past the documented bounds are rejected before any rule runs") {
  auto router = Router::FromDefaults();
  REQUIRE(router.ok());
  Request many;
  many.SetTarget("/gitlab-org/x");
  for (std::size_t i = 0; i <= kMaxRequestFields; ++i)
    many.AddHeader("X-" + std::to_string(i), "v");
  Decision d = router->Route(many.view());
  CHECK(d.rejected());
  CHECK(d.outcome().reason() == "request has more than 256 headers and cookies");
  CHECK(router->Explain(many.view()).decision.rejected());

  Request big;
  big.SetTarget("/" + std::string(kMaxRequestBytes, 'a'));
  d = router->Route(big.view());
  CHECK(d.rejected());
  CHECK(d.outcome().reason() == "request is larger than 65536 bytes");

  Request fine;
  fine.SetTarget("/gitlab-org/x");
  for (std::size_t i = 1; i < kMaxRequestFields; ++i) fine.AddHeader("X-" + std::to_string(i), "v");
  CHECK(router->Route(fine.view()).cell_id() == 2);
}

TEST_CASE("rulesets past the documented bounds are refused at load") {
  std::string rules = "[";
  for (std::size_t i = 0; i <= kMaxRules; ++i) {
    rules += std::string(i ? "," : "") + R"({"id":"r)" + std::to_string(i) +
             R"(","action":"classify","classify":{"type":"FIRST_CELL"}})";
  }
  rules += "]";
  CHECK_THAT(testing::ParseError(rules), Catch::Contains("10001 rules; at most 10000"));
  std::string huge = "[a-z]{1000}";
  for (int i = 0; i < 4; ++i) huge += huge;
  CHECK_THAT(testing::ParseError(R"([{"id":"big","match":{"type":"path","regex_value":")" + huge +
                                 R"("},"action":"proxy"}])"),
             Catch::Contains("instructions; at most 10000"));
  std::string deep(100, '[');
  deep += std::string(100, ']');
  CHECK_THAT(testing::ParseError(deep), Catch::Contains("nested deeper than 64 levels"));
}
