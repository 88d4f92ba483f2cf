#include <cellroute/topology.h>

#include <catch2/catch.hpp>

#include "common/test_util.h"

using Catch::Matchers::Contains;
using cellroute::Cell;
using cellroute::Topology;

namespace {
std::string Error(const std::string& toml) {
  auto t = Topology::ParseToml(toml, "config.toml");
  REQUIRE_FALSE(t.ok());
  return t.status().message();
}
}  // namespace

TEST_CASE("the Topology Service's config.toml loads and its first cell is the legacy cell") {
  auto t = Topology::ParseToml(R"J(
[[cells]]
id = 1
address = "legacy.example.com"
[[cells.sequence_ranges]]
minval = 1
maxval = 999999999999

[[cells]]
id = 2
address = "cell-2.example.com:443"
session_prefix = "cell-2"
[[cells.sequence_ranges]]
minval = 1000000000000
maxval = 1099999999999
)J",
                               "config.toml");
  INFO(t.status().message());
  REQUIRE(t.ok());
  REQUIRE(t->cells().size() == 2);
  CHECK(t->legacy().id == 1);
  CHECK(t->legacy().session_prefix.empty());
  CHECK(t->FindBySessionPrefix("cell-2")->id == 2);
  CHECK(t->FindBySessionPrefix("cell-20") == nullptr);
  CHECK(t->FindBySessionPrefix("") == nullptr);
  CHECK(t->FindById(2)->address == "cell-2.example.com:443");
  CHECK(t->FindById(3) == nullptr);
  CHECK(t->cells()[1].sequence_ranges[0].minval == 1000000000000);
}

TEST_CASE("the shipped example topology loads") {
  auto t = Topology::LoadFile(CELLROUTE_EXAMPLES_DIR "/topology.toml");
  REQUIRE(t.ok());
  CHECK(t->cells().size() == 3);
}

TEST_CASE("TOML syntax errors name file, line and column") {
  CHECK_THAT(Error("[[cells]]\nid = 1\naddress = \"x\nfoo"), Contains("config.toml:3:"));
  CHECK_THAT(Error("[[cells]]\nid = = 1\n"), Contains("config.toml:2:"));
}

TEST_CASE("bad cells are refused with their location") {
  CHECK_THAT(Error(""), Contains("no [[cells]]"));
  CHECK_THAT(Error("cells = 5"), Contains("config.toml:1:9: cells: expected an array of tables"));
  CHECK_THAT(Error("[[cells]]\naddress = \"a\"\n"), Contains("cells[0].id: required"));
  CHECK_THAT(Error("[[cells]]\nid = 1\n"), Contains("cells[0].address: required"));
  CHECK_THAT(Error("[[cells]]\nid = \"1\"\naddress = \"a\"\n"),
             Contains("config.toml:2:6: cells[0].id: expected an integer"));
  CHECK_THAT(Error("[[cells]]\nid = 1\naddress = \"a\"\nsesion_prefix = \"x\"\n"),
             Contains("config.toml:4:17: cells[0].sesion_prefix: unknown key"));
  CHECK_THAT(Error("[[cells]]\nid = 0\naddress = \"a\"\n"), Contains("id: must be a positive"));
  CHECK_THAT(Error("[[cells]]\nid = 1\naddress = \"a b\"\n"), Contains("contains white space"));
  CHECK_THAT(Error("[[cells]]\nid = 1\naddress = \"" + std::string(300, 'a') + "\"\n"),
             Contains("longer than 255 bytes"));
}

TEST_CASE("duplicate ids and session prefixes name both places") {
  std::string dup_id =
      Error("[[cells]]\nid = 1\naddress = \"a\"\n\n[[cells]]\nid = 1\naddress = \"b\"\n");
  CHECK_THAT(dup_id, Contains("config.toml:5:1: cells[1] (id 1): id: duplicate cell id 1, also at "
                              "config.toml:1:1: cells[0] (id 1)"));
  std::string dup_prefix = Error(
      "[[cells]]\nid = 1\naddress = \"a\"\nsession_prefix = \"p\"\n"
      "[[cells]]\nid = 2\naddress = \"b\"\nsession_prefix = \"p\"\n");
  CHECK_THAT(dup_prefix, Contains("duplicate session prefix \"p\", also at config.toml:1:1"));
}

TEST_CASE("sequence ranges must be ranges and must not overlap") {
  CHECK_THAT(Error("[[cells]]\nid = 1\naddress = \"a\"\n[[cells.sequence_ranges]]\nminval = 5\n"
                   "maxval = 1\n"),
             Contains("[5, 1] is not a range"));
  CHECK_THAT(Error("[[cells]]\nid = 1\naddress = \"a\"\n[[cells.sequence_ranges]]\nminval = 1\n"
                   "maxval = 10\n[[cells]]\nid = 2\naddress = \"b\"\n[[cells.sequence_ranges]]\n"
                   "minval = 10\nmaxval = 20\n"),
             Contains("[10, 20] overlaps [1, 10]"));
  CHECK_THAT(Error("[[cells]]\nid = 1\naddress = \"a\"\n[[cells.sequence_ranges]]\nminval = 1\n"),
             Contains("expected a table with integer minval and maxval only"));
}

TEST_CASE("cells from elsewhere are validated the same way") {
  std::vector<Cell> cells = {{1, "a", "", {}}, {2, "b", "x", {}}, {2, "", "x", {}}};
  auto t = Topology::FromCells(cells, "GetCells");
  REQUIRE_FALSE(t.ok());
  const std::string& m = t.status().message();
  CHECK_THAT(
      m,
      Contains("GetCells: cells[2] (id 2): id: duplicate cell id 2, also at GetCells: cells[1]"));
  CHECK_THAT(m, Contains("cells[2] (id 2): address: required"));
  CHECK_THAT(m, Contains("duplicate session prefix \"x\""));
  CHECK_FALSE(Topology::FromCells({}, "GetCells").ok());
  CHECK(Topology::FromCells({{7, "x:1", "", {}}}, "GetCells")->legacy().id == 7);
}
