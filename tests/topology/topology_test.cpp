#include <cellroute/topology.h>

#include <catch2/catch.hpp>
#include <random>

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
  CHECK_THAT(Error("[[cells]]\nid = 1\naddress = \"a b\"\n"),
             Contains("address: byte 0x20 is not allowed"));
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

TEST_CASE("what the Topology Service sends is checked like a file: bytes, lengths, count") {
  auto from = [](Cell c) { return Topology::FromCells({std::move(c)}, "GetCells"); };
  // A control character used to be written raw into the snapshot, which then failed to load.
  auto ctl = from({1, "one:1", "cell-\x01", {}});
  REQUIRE_FALSE(ctl.ok());
  CHECK_THAT(ctl.status().message(), Contains("session_prefix: byte 0x01"));
  CHECK_FALSE(from({1, "one:1", "cell;1", {}}).ok());
  CHECK_FALSE(from({1, "one:1", std::string(65, 'p'), {}}).ok());
  CHECK_FALSE(from({1, "one\n:1", "", {}}).ok());
  CHECK_FALSE(from({1, "\xc3\xa9:1", "", {}}).ok());
  CHECK_FALSE(from({1, "", "", {}}).ok());
  std::vector<Cell> many;
  for (int i = 1; i <= 1025; ++i) many.push_back({i, "c:" + std::to_string(i), "", {}});
  CHECK_THAT(Topology::FromCells(many, "GetCells").status().message(), Contains("at most 1024"));
}

TEST_CASE("a float id is an error, never a conversion") {
  CHECK_THAT(Error("[[cells]]\nid = 2e52\naddress = \"a:1\"\n"),
             Contains("id: expected an integer"));
  CHECK_THAT(Error("[[cells]]\nid = 1\naddress = \"a:1\"\n[[cells.sequence_ranges]]\n"
                   "minval = 1.5e300\nmaxval = 2\n"),
             Contains("integer minval and maxval"));
}

TEST_CASE("parse(write(x)) == x for every topology that validates") {
  // Generated cells, with bytes a writer must escape or a validator must refuse.
  std::mt19937_64 rng(20261201);
  const std::string alphabet = "abcz09.-_:;,=\"\\' \t\n\x01\x7f\xc3\xa9[]{}#";
  auto text = [&](std::size_t max) {
    std::string s;
    std::size_t n = rng() % (max + 1);
    for (std::size_t i = 0; i < n; ++i) s += alphabet[rng() % alphabet.size()];
    return s;
  };
  int accepted = 0;
  for (int round = 0; round < 20000; ++round) {
    std::vector<Cell> cells;
    std::size_t n = 1 + rng() % 4;
    for (std::size_t i = 0; i < n; ++i) {
      Cell c;
      c.id = static_cast<std::int64_t>(rng() % 6);
      c.address = text(12);
      c.session_prefix = rng() % 3 ? text(8) : "";
      if (rng() % 2) {
        std::int64_t lo =
            static_cast<std::int64_t>(rng() % 1000) + 1000 * static_cast<std::int64_t>(i);
        c.sequence_ranges.push_back({lo, lo + static_cast<std::int64_t>(rng() % 999)});
      }
      cells.push_back(std::move(c));
    }
    auto topo = Topology::FromCells(cells, "generated");
    if (!topo.ok()) continue;
    ++accepted;
    auto back = Topology::ParseToml(topo->ToToml(), "snapshot");
    INFO(topo->ToToml());
    REQUIRE(back.ok());
    REQUIRE(back->cells() == topo->cells());
  }
  CHECK(accepted > 50);  // the property was exercised, not only the refusals
}
