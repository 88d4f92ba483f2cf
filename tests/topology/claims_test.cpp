#include <cellroute/topology.h>

#include <catch2/catch.hpp>

#include "common/test_util.h"

using Catch::Matchers::Contains;
using cellroute::Claims;
using cellroute::ClassifyType;
using cellroute::Topology;

namespace {
Topology ThreeCells() {
  return Topology::FromCells({{1, "a", "", {}}, {2, "b", "cell-2", {}}, {3, "c", "cell-3", {}}},
                             "test")
      .value();
}
}  // namespace

TEST_CASE("claims map a claim type and value to a cell") {
  auto topo = ThreeCells();
  auto c = Claims::Parse(
      R"J({"route": {"gitlab-org": 2, "acme": 3}, "ORGANIZATION_PATH": {"acme-corp": 3},
                             "project_id": {"42": 1}})J",
      "claims.json", topo);
  INFO(c.status().message());
  REQUIRE(c.ok());
  CHECK(c->size() == 4);
  CHECK(c->Find(ClassifyType::kClaimRoute, "gitlab-org") == 2);
  CHECK(c->Find(ClassifyType::kClaimOrganizationPath, "acme-corp") == 3);
  CHECK(c->Find(ClassifyType::kClaimProjectId, "42") == 1);
  CHECK_FALSE(c->Find(ClassifyType::kClaimRoute, "acme-corp").has_value());
  CHECK_FALSE(c->Find(ClassifyType::kClaimOrganizationPath, "gitlab-org").has_value());
  CHECK_FALSE(c->Find(ClassifyType::kSessionPrefix, "gitlab-org").has_value());
  CHECK(c->Entries().size() == 4);
}

TEST_CASE("the shipped example claims load against the shipped topology") {
  auto topo = Topology::LoadFile(CELLROUTE_EXAMPLES_DIR "/topology.toml");
  REQUIRE(topo.ok());
  auto c = Claims::LoadFile(CELLROUTE_EXAMPLES_DIR "/claims.json", topo.value());
  INFO(c.status().message());
  REQUIRE(c.ok());
  CHECK(c->Find(ClassifyType::kClaimRoute, "gitlab-org") == 2);
}

TEST_CASE("bad claims files list every error") {
  auto topo = ThreeCells();
  auto c = Claims::Parse(R"J({"route": {"a": 9, "b": "2", "": 1}, "nope": {}, "username": []})J",
                         "claims.json", topo);
  REQUIRE_FALSE(c.ok());
  const std::string& m = c.status().message();
  CHECK_THAT(m, Contains("claims.json: route.a: cell 9 is not in the topology (test)"));
  CHECK_THAT(m, Contains("claims.json: route.b: expected an integer cell id, got string"));
  CHECK_THAT(m, Contains("empty claim value"));
  CHECK_THAT(m, Contains("'nope': not a claim type"));
  CHECK_THAT(m, Contains("username: expected an object"));
  CHECK_THAT(Claims::Parse("{\"route\": {\"a\": 1,}}", "claims.json", topo).status().message(),
             Contains("claims.json:1:19:"));
  CHECK_THAT(
      Claims::Parse(R"J({"route": {"a": 1, "a": 2}})J", "claims.json", topo).status().message(),
      Contains("duplicate key 'a'"));
}

TEST_CASE("one claim given twice, whatever the case of its type, names both places") {
  auto topo = cellroute::Topology::ParseToml(
                  "[[cells]]\nid = 1\naddress = \"a:1\"\n[[cells]]\nid = 2\naddress = \"b:1\"\n"
                  "[[cells]]\nid = 3\naddress = \"c:1\"\n",
                  "t.toml")
                  .value();
  auto c = cellroute::Claims::Parse(R"({"route":{"gitlab-org":2},"ROUTE":{"gitlab-org":3}})",
                                    "claims.json", topo);
  REQUIRE_FALSE(c.ok());
  CHECK_THAT(c.status().message(), Catch::Contains("route.gitlab-org"));
  CHECK_THAT(c.status().message(), Catch::Contains("ROUTE.gitlab-org"));
  CHECK_THAT(c.status().message(), Catch::Contains("claimed again"));
}
