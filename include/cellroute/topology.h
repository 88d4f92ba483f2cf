// Topology: the cells (from the Topology Service's own config.toml) and, for routing without a
// service, a claims file that says which cell owns a top-level route, an organization path...
//
//   auto topo = cellroute::Topology::LoadFile("config.toml");
//   const cellroute::Cell& legacy = topo->legacy();                  // the first [[cells]]
//   const cellroute::Cell* c = topo->FindBySessionPrefix("cell-2");  // nullptr when unknown
//
//   auto claims = cellroute::Claims::LoadFile("claims.json", *topo);  // owners must exist
//   std::optional<int64_t> owner = claims->Find(ClassifyType::kClaimRoute, "gitlab-org");
//
// Both are immutable values validated as a whole when built: unique cell ids and session
// prefixes, non-empty addresses and prefixes of visible ASCII, sane and disjoint sequence
// ranges, at most kMaxCells cells, claims that name known cells (each claim once, whatever
// the case of its type). Const member functions are safe to call from any number of threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cellroute/export.h"
#include "cellroute/rules.h"
#include "cellroute/status.h"

namespace cellroute {

// Bounds on a topology, from a file or from the Topology Service alike.
inline constexpr std::size_t kMaxCells = 1024;
inline constexpr std::size_t kMaxSessionPrefixBytes = 64;

struct SequenceRange {
  std::int64_t minval = 0;
  std::int64_t maxval = 0;
  bool operator==(const SequenceRange&) const = default;
};

struct Cell {
  std::int64_t id = 0;
  std::string address;         // host or host:port
  std::string session_prefix;  // empty when the cell has none
  std::vector<SequenceRange> sequence_ranges;
  bool operator==(const Cell&) const = default;
};

class CELLROUTE_EXPORT Topology {
 public:
  static Result<Topology> ParseToml(std::string_view text, std::string_view source);
  static Result<Topology> LoadFile(const std::string& path);
  // Validates cells that came from elsewhere (the Topology Service); `source` names them.
  static Result<Topology> FromCells(std::vector<Cell> cells, std::string_view source);

  // The cells in the Topology Service's config.toml format (ParseToml reads it back).
  std::string ToToml() const;
  // 16 hex digits that name these cells, in this order: the same cells give the same hash in
  // every process and on every machine running the same cellroute version (for metrics and
  // status: which topology is this?). The function may change between versions.
  std::string ContentHash() const;

  const std::vector<Cell>& cells() const noexcept { return cells_; }
  const Cell& legacy() const noexcept { return cells_.front(); }
  const Cell* FindById(std::int64_t id) const noexcept;
  const Cell* FindBySessionPrefix(std::string_view prefix) const noexcept;
  std::string_view source() const noexcept { return source_; }

 private:
  Topology() = default;
  std::vector<Cell> cells_;
  std::string source_;
};

struct ClaimEntry {
  ClassifyType type = ClassifyType::kNone;
  std::string value;
  std::int64_t cell_id = 0;
};

class CELLROUTE_EXPORT Claims {
 public:
  // JSON: {"route": {"gitlab-org": 2}, "organization_path": {"acme": 3}}. Every owner must be a
  // cell of `topology`.
  static Result<Claims> Parse(std::string_view json, std::string_view source,
                              const Topology& topology);
  static Result<Claims> LoadFile(const std::string& path, const Topology& topology);
  static Claims Empty();

  std::optional<std::int64_t> Find(ClassifyType type, std::string_view value) const noexcept;
  std::vector<ClaimEntry> Entries() const;
  std::size_t size() const noexcept;
  std::string_view source() const noexcept;

  struct Index;  // defined in src/topology

 private:
  explicit Claims(std::shared_ptr<const Index> index) : index_(std::move(index)) {}
  std::shared_ptr<const Index> index_;
};

}  // namespace cellroute
