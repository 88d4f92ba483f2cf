// RouteTable: classification key -> cell, read without locks, written by a background writer.
//
//   cellroute::RouteTable table;
//   table.SetTopology(topology);                                   // the cell list
//   table.Put(ClassifyType::kClaimRoute, "gitlab-org", 2, std::chrono::hours(1));
//   table.PutNegative(ClassifyType::kClaimRoute, "nobody", std::chrono::minutes(10));
//
//   {
//     cellroute::RouteTable::Reader r(table);        // one consistent version until it ends
//     auto hit = r.Lookup(ClassifyType::kClaimRoute, "gitlab-org");
//     if (hit.kind == cellroute::TableHit::Kind::kPositive) {
//       const cellroute::Cell* cell = r.topology()->FindById(hit.cell_id);
//     }
//   }
//
// Readers never lock, never allocate (after a thread's first read, which registers it) and
// never write to memory another thread reads: a Reader is an RCU read-side critical section
// (liburcu's bp flavour) around one atomic load of the current snapshot (the router's own
// Readers borrow the section it reads its rules in: ADR 0017). Each snapshot is an
// immutable trie over the keys' hashes (wide nodes, buckets of entries as leaves: ADR 0010)
// plus the cell list; a writer builds the next snapshot by copying the paths it changes,
// publishes it with one atomic store, and frees what the old snapshot alone used only after a
// grace period, when no reader can still see it. So a change,
// whether one entry, a batch or a whole new cell list, becomes visible all at once, and a
// Reader sees the same version for as long as it lives.
//
// Entries are static (from a claims file: never expire, never evicted) or cached (with a time
// to live and a refresh time, for answers from the Topology Service). A negative entry records
// "no cell owns this". When cached entries exceed `max_cached_entries`, the writer evicts by
// sampling: of a few random cached entries, the one that expires soonest goes (so entries kept
// fresh by use survive). Writers are serialized by an internal mutex and never wait for
// readers except, rarely, for a grace period when reclaiming memory, and never for a Reader of
// their own thread.
//
// Keep Readers short: a Reader that lives long delays reclamation (memory), never correctness.
// A Reader ends on the thread that made it (it is that thread's read-side section). Do not hold
// a Reader across fork().
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cellroute/export.h"
#include "cellroute/rules.h"
#include "cellroute/topology.h"

namespace cellroute {

namespace internal {
struct ReaderInSection;  // src/table/reader_in_section.h
}  // namespace internal

struct TableHit {
  enum class Kind : std::uint8_t { kMiss, kPositive, kNegative };
  Kind kind = Kind::kMiss;
  std::int64_t cell_id = 0;    // for kPositive
  std::int64_t age_ms = 0;     // since the entry was written
  bool is_static = false;      // from a claims file: no expiry
  bool needs_refresh = false;  // past its refresh time: still valid, ask again in background
};

struct TableOptions {
  // Bound on cached (expiring) entries; static entries are not counted.
  std::size_t max_cached_entries = 1'000'000;
  // Memory the writer has retired is freed after a grace period (when no Reader can still see
  // it). The writer waits for one only when the retired memory passes `reclaim_bytes`, or
  // `reclaim_batch` objects when that is not zero: a budget, so that a preempted reader stalls
  // the writer once per budget rather than once per batch.
  std::size_t reclaim_bytes = 64 << 20;
  std::size_t reclaim_batch = 0;
  // Milliseconds on a monotonic clock; tests substitute their own. Null: CLOCK_MONOTONIC_COARSE.
  std::int64_t (*now_ms)() = nullptr;
};

class CELLROUTE_EXPORT RouteTable {
 public:
  using Duration = std::chrono::milliseconds;
  // Longer values are not claims: Put ignores them and Lookup misses.
  static constexpr std::size_t kMaxKeyBytes = 4096;

  explicit RouteTable(TableOptions options = {});
  ~RouteTable();
  RouteTable(const RouteTable&) = delete;
  RouteTable& operator=(const RouteTable&) = delete;

  // A read-side critical section over one snapshot. Cheap: construct one per request.
  class CELLROUTE_EXPORT Reader {
   public:
    explicit Reader(const RouteTable& table) noexcept;
    ~Reader();
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;

    std::uint64_t version() const noexcept;
    // The published cell list; nullptr until one is set.
    const Topology* topology() const noexcept;
    TableHit Lookup(ClassifyType type, std::string_view value) const noexcept;

   private:
    // A Reader inside a read-side section its maker already holds for longer (the router's,
    // while it routes a request): the same snapshot and lookups without a section of its own,
    // which would cost a few thread-local accesses. Only the library makes one
    // (internal::ReaderInSection): made outside a section, it could read freed memory.
    friend struct internal::ReaderInSection;
    struct InSection {};
    Reader(const RouteTable& table, InSection) noexcept;

    const RouteTable& table_;
    const void* snapshot_;
    void* section_;  // the read-side section this Reader ends; null when it borrows one
  };

  // Changes applied together: readers see all of them or none.
  class CELLROUTE_EXPORT Batch {
   public:
    void SetTopology(Topology topology);
    // ttl zero: a static entry.
    void Put(ClassifyType type, std::string_view value, std::int64_t cell_id,
             Duration ttl = Duration::zero(), Duration refresh_after = Duration::zero());
    void PutNegative(ClassifyType type, std::string_view value, Duration ttl,
                     Duration refresh_after = Duration::zero());
    void Erase(ClassifyType type, std::string_view value);
    // Removes every entry that names the cell.
    void PurgeCell(std::int64_t cell_id);
    bool empty() const noexcept { return ops_.empty() && !topology_; }

   private:
    friend class RouteTable;
    struct Op {
      enum class Kind : std::uint8_t { kPut, kPutNegative, kErase, kPurgeCell } kind;
      ClassifyType type;
      std::string value;
      std::int64_t cell_id;
      Duration ttl, refresh_after;
    };
    std::vector<Op> ops_;
    std::shared_ptr<const Topology> topology_;
  };

  // Publishes a batch as one new version and returns it. Never waits for the calling thread's
  // own Reader: called inside one (a writer inside a read section), it publishes as usual and
  // leaves the memory it retired for the next write made outside any Reader.
  std::uint64_t Apply(Batch batch);

  // One-change conveniences, each a version of its own.
  std::uint64_t SetTopology(Topology topology);
  std::uint64_t Put(ClassifyType type, std::string_view value, std::int64_t cell_id,
                    Duration ttl = Duration::zero(), Duration refresh_after = Duration::zero());
  std::uint64_t PutNegative(ClassifyType type, std::string_view value, Duration ttl,
                            Duration refresh_after = Duration::zero());
  std::uint64_t Erase(ClassifyType type, std::string_view value);
  std::uint64_t PurgeCell(std::int64_t cell_id);
  // Static entries for every claim of a claims file.
  std::uint64_t LoadClaims(const Claims& claims);

  struct Stats {
    std::uint64_t version = 0;
    std::size_t entries = 0;         // static + cached
    std::size_t cached_entries = 0;  // expiring entries, bounded by max_cached_entries
    std::size_t negative_entries = 0;
    std::uint64_t evictions = 0;
    std::size_t bytes = 0;  // nodes and buckets in use, entries and keys included
    // Memory held from the system: `bytes`, what is waiting for a grace period, and the free
    // space of the table's chunks, which it reuses. Returned when the table is destroyed.
    std::size_t reserved_bytes = 0;
    std::size_t pending_reclaim = 0;        // retired objects waiting for a grace period
    std::size_t pending_reclaim_bytes = 0;  // and their size
    // Reclamations put off because the writer was inside a Reader (see Apply).
    std::uint64_t deferred_reclaims = 0;
  };
  Stats stats() const;

  std::int64_t NowMs() const noexcept;

  // Waits for a grace period and frees everything retired. The destructor does this too.
  void Reclaim();

  struct State;  // defined in src/table

 private:
  std::unique_ptr<State> state_;
};

}  // namespace cellroute
