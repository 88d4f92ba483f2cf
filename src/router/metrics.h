// Counting decisions on the routing path: by rule and by where the cell came from, rejections
// by class, and a sampled latency histogram. Per-thread shards of counters (owned shards take
// plain stores, the shared one atomic adds): no lock, no allocation and no cache line shared
// between threads on the routing path; reading adds the shards.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "cellroute/router.h"
#include "common/prometheus.h"

namespace cellroute::internal {

// The (source, fallback) pairs a decision can have, as a dense index: with no fallback, the
// source; with one, the fallback, once with the legacy cell as the source and once with none.
inline constexpr std::size_t kOutcomeSlots = 19;
inline constexpr std::size_t kSources = 7;  // Source::kNone .. Source::kFallback
inline constexpr std::size_t kFallbacks = 7;
static_assert(kSources + 2 * (kFallbacks - 1) == kOutcomeSlots);
inline std::size_t OutcomeSlot(Source source, Fallback fallback) noexcept {
  auto s = static_cast<std::size_t>(source), f = static_cast<std::size_t>(fallback);
  if (s >= kSources || f >= kFallbacks) return 0;
  if (f == 0) return s;
  return kSources + (source == Source::kFallback ? 0 : kFallbacks - 1) + (f - 1);
}
void SlotOutcome(std::size_t slot, Source* source, Fallback* fallback) noexcept;

// Routing latency buckets, in nanoseconds (the histogram is written in seconds).
inline constexpr std::array<std::uint64_t, 9> kLatencyBoundsNs = {
    100, 250, 500, 1'000, 2'500, 5'000, 10'000, 100'000, 1'000'000};
// One decision in this many per thread is timed.
inline constexpr unsigned kTimeOneIn = 64;

// Counts, added up over shards and over the rulesets a router had before a reload.
struct DecisionTotals {
  // By rule id ("" for decisions no rule made): the rule's action and type, and decisions by
  // OutcomeSlot.
  struct Row {
    std::string rule, action, type;
    std::uint64_t count[kOutcomeSlots] = {};
  };
  std::map<std::string, Row> by_rule;
  std::uint64_t rejected[4] = {};  // by Outcome::Rejection
  std::uint64_t latency[kLatencyBoundsNs.size() + 1] = {};
  std::uint64_t latency_sum_ns = 0;

  void Write(PromWriter& w) const;
};

class DecisionMetrics {
 public:
  // Rows for `rules`' rules and one for decisions no rule made.
  explicit DecisionMetrics(const Ruleset& rules);

  // What a decision of the calling thread counts into, and whether it is one to time: read
  // once per decision (one thread-local access), before routing.
  struct Ticket {
    void* shard;
    bool timed;
  };
  DecisionMetrics(const DecisionMetrics&) = delete;
  DecisionMetrics& operator=(const DecisionMetrics&) = delete;
  // Inline, as the routing path's other steps: a decision costs a few instructions to count.
  Ticket Begin() const noexcept {
    ThreadState& t = t_thread;
    if (__builtin_expect(t.shard_plus_one == 0, 0)) t.shard_plus_one = FirstShard();
    return {&shards_[t.shard_plus_one - 1], ++t.tick % kTimeOneIn == 0};
  }
  void Count(const Ticket& ticket, const Decision& d) const noexcept {
    Shard& s = *static_cast<Shard*>(ticket.shard);
    const int rule = d.outcome().rule_index();
    const std::size_t row = rule < 0 || static_cast<std::size_t>(rule) >= rows_ - 1
                                ? rows_ - 1
                                : static_cast<std::size_t>(rule);
    Bump(s.owned, s.cells()[row * kOutcomeSlots + OutcomeSlot(d.source(), d.fallback())]);
    if (d.rejected()) {
      Bump(s.owned, s.rejected[static_cast<std::size_t>(d.outcome().rejection()) & 3]);
    }
  }
  void ObserveNs(const Ticket& ticket, std::uint64_t ns) const noexcept;

  // Adds these counts to `totals`.
  void AddTo(DecisionTotals* totals) const;

 private:
  // The first kOwnShards threads to route each own a shard and count with plain loads and
  // stores (no locked instruction); later threads share the last one, with atomic adds.
  static constexpr std::size_t kOwnShards = 8;
  // The calling thread's shard (plus one; 0 until its first decision) and the count of its
  // decisions, for timing one in kTimeOneIn. Constant-initialized, so that reading it needs no
  // guard.
  struct ThreadState {
    unsigned shard_plus_one;
    unsigned tick;
  };
  static constinit inline thread_local ThreadState t_thread{0, 0};
  // The shard of a thread's first decision (plus one).
  [[gnu::cold]] static unsigned FirstShard() noexcept;
  // An owned shard has one writer: a plain load and store, which readers see whole. A shared
  // one takes an atomic add.
  static void Bump(bool owned, std::atomic<std::uint64_t>& a, std::uint64_t by = 1) noexcept {
    if (owned) {
      a.store(a.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
    } else {
      a.fetch_add(by, std::memory_order_relaxed);
    }
  }
  static constexpr std::size_t kShards = kOwnShards + 1;
  struct alignas(64) Shard {
    bool owned = false;
    // rows x kOutcomeSlots counters, at cells() with a cache line of padding on either side so
    // that no other shard's (or anything else's) memory shares a line with them.
    std::unique_ptr<std::atomic<std::uint64_t>[]> storage;
    std::atomic<std::uint64_t>* cells() const noexcept { return storage.get() + kPad; }
    static constexpr std::size_t kPad = 64 / sizeof(std::uint64_t);
    std::atomic<std::uint64_t> rejected[4] = {};
    std::atomic<std::uint64_t> latency[kLatencyBoundsNs.size() + 1] = {};
    std::atomic<std::uint64_t> latency_sum_ns{0};
  };
  Ruleset rules_;
  std::size_t rows_;
  mutable std::array<Shard, kShards> shards_;  // counters: written through const
};

}  // namespace cellroute::internal
