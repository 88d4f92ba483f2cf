// Route table lookups against two baselines: a std::mutex + std::unordered_map, and an
// absl::flat_hash_map published as an immutable snapshot read under the same RCU read lock
// (Lookup/absl-rcu: the fastest lock-free design that gives up cheap updates). Alone, warm
// (Zipf-skewed keys) and cold (uniform keys), and on both cores while a writer applies more
// than 100k updates per second. Memory per entry is reported as a counter.
#include <absl/container/flat_hash_map.h>
#include <absl/strings/string_view.h>
#include <benchmark/benchmark.h>
#include <cellroute/table.h>
#include <time.h>

// The read side as the route table uses it (inline lock and unlock), for the absl baseline.
#define _LGPL_SOURCE
#include <urcu/urcu-bp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>

namespace cellroute::bench {

namespace {

constexpr auto kRoute = ClassifyType::kClaimRoute;
constexpr std::size_t kSample = 1 << 16;

std::string Key(std::size_t i) { return "group-" + std::to_string(i * 2654435761u % 1000000007u); }

// What the absl baseline stores per key: the cell and when the answer expires, which it checks
// on the same coarse clock as the table.
struct AbslEntry {
  std::int64_t cell_id;
  std::int64_t expires_ms;
};

std::int64_t CoarseMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

struct Dataset {
  explicit Dataset(std::size_t n) : size(n) {
    std::size_t key_bytes = 0;
    RouteTable::Batch batch;
    batch.SetTopology(Topology::FromCells({{1, "a:1", "", {}}, {2, "b:1", "", {}}}, "bench").value());
    map.reserve(n);
    auto absl_map = std::make_unique<absl::flat_hash_map<std::string, AbslEntry>>();
    absl_map->reserve(n);
    const std::int64_t expires = CoarseMs() + 3'600'000;
    for (std::size_t i = 0; i < n; ++i) {
      std::string k = Key(i);
      key_bytes += k.size();
      auto cell = static_cast<std::int64_t>(1 + i % 2);
      batch.Put(kRoute, k, cell, std::chrono::hours(1));
      map.emplace(k, cell);
      absl_map->emplace(k, AbslEntry{cell, expires});
    }
    absl_snapshot.store(absl_map.release(), std::memory_order_release);
    TableOptions options;
    options.max_cached_entries = n + 1;
    table = std::make_unique<RouteTable>(options);
    auto empty = table->stats();
    table->Apply(std::move(batch));
    table->Reclaim();
    auto full = table->stats();
    // In use (each node and bucket at its size class), and all the table holds from the
    // system (its chunks' free space and what a build on a 2 MiB chunk leaves unused).
    bytes_per_entry = static_cast<double>(full.bytes - empty.bytes - key_bytes) /
                      static_cast<double>(n);
    reserved_per_entry = static_cast<double>(full.reserved_bytes - empty.reserved_bytes -
                                             key_bytes) /
                         static_cast<double>(n);

    std::mt19937_64 rng(1);
    // Zipf (s = 1) over the keys by inverse transform on the harmonic CDF, approximated.
    double hn = std::log(static_cast<double>(n)) + 0.5772;
    std::uniform_real_distribution<double> u(0, 1);
    for (std::size_t i = 0; i < kSample; ++i) {
      auto rank = static_cast<std::size_t>(std::exp(u(rng) * hn - 0.5772));
      warm.push_back(Key(std::min(rank, n - 1)));
      cold.push_back(Key(rng() % n));
    }
  }
  std::size_t size;
  std::unique_ptr<RouteTable> table;
  std::unordered_map<std::string, std::int64_t> map;
  std::mutex map_mu;
  // Never replaced in these benchmarks; kept for the life of the process.
  std::atomic<const absl::flat_hash_map<std::string, AbslEntry>*> absl_snapshot{nullptr};
  double bytes_per_entry = 0;
  double reserved_per_entry = 0;
  std::vector<std::string> warm, cold;
};

Dataset& DatasetFor(std::size_t n) {
  static std::map<std::size_t, std::unique_ptr<Dataset>> cache;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  auto& d = cache[n];
  if (!d) d = std::make_unique<Dataset>(n);
  return *d;
}

const std::vector<std::string>& Keys(Dataset& d, const benchmark::State& state) {
  return state.range(1) ? d.warm : d.cold;
}

// One lookup of the state's key set per iteration; `lookup(dataset, key)` returns the cell.
template <typename Lookup>
Dataset& RunLookups(benchmark::State& state, Lookup lookup) {
  Dataset& d = DatasetFor(static_cast<std::size_t>(state.range(0)));
  const auto& keys = Keys(d, state);
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919;
  std::int64_t found = 0;
  for (auto _ : state) found += lookup(d, keys[i++ & (kSample - 1)]);
  benchmark::DoNotOptimize(found);
  state.SetItemsProcessed(state.iterations());
  return d;
}

void BM_Lookup_cellroute(benchmark::State& state) {
  Dataset& d = RunLookups(state, [](Dataset& data, const std::string& key) {
    RouteTable::Reader r(*data.table);  // one per request, as the router does
    return r.Lookup(kRoute, key).cell_id;
  });
  state.counters["bytes_per_entry"] = d.bytes_per_entry;
  state.counters["reserved_per_entry"] = d.reserved_per_entry;
}

// The same lookups inside a read-side section that is already held, as the router makes them
// (it reads the table inside the section it reads its rules in: ADR 0017): one Reader for 64
// lookups, so that a run shows the lookup without a section of its own (ADR 0018; what it
// showed is in docs/performance.md §2).
void BM_Lookup_cellroute_held(benchmark::State& state) {
  std::optional<RouteTable::Reader> reader;
  std::size_t lookups = 0;
  RunLookups(state, [&](Dataset& data, const std::string& key) {
    if (lookups++ % 64 == 0) {
      reader.reset();
      reader.emplace(*data.table);
    }
    return reader->Lookup(kRoute, key).cell_id;
  });
}

void BM_Lookup_baseline(benchmark::State& state) {
  RunLookups(state, [](Dataset& data, const std::string& key) -> std::int64_t {
    std::lock_guard<std::mutex> lock(data.map_mu);
    auto it = data.map.find(key);
    return it == data.map.end() ? 0 : it->second;
  });
}

void BM_Lookup_absl_rcu(benchmark::State& state) {
  RunLookups(state, [](Dataset& data, const std::string& key) -> std::int64_t {
    urcu_bp_read_lock();
    const auto* map = data.absl_snapshot.load(std::memory_order_acquire);
    auto it = map->find(absl::string_view(key.data(), key.size()));
    std::int64_t cell =
        it != map->end() && CoarseMs() < it->second.expires_ms ? it->second.cell_id : 0;
    urcu_bp_read_unlock();
    return cell;
  });
}

// The cost of one DRAM miss on this machine: a dependent pointer chase over an array far larger
// than any cache (1 GiB; 64 MiB in short mode), in one random cycle so that no prefetcher helps.
// A cold lookup in a table much larger than the caches cannot cost less than one of these.
void BM_DramFloor(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0)) / sizeof(std::uint64_t);
  static std::vector<std::uint64_t> next;
  if (next.size() != n) {
    next.resize(n);
    for (std::size_t i = 0; i < n; ++i) next[i] = i;
    std::mt19937_64 rng(7);
    for (std::size_t i = n - 1; i > 0; --i) {  // Sattolo: one cycle through every slot
      std::swap(next[i], next[rng() % i]);
    }
  }
  std::uint64_t at = 0;
  for (auto _ : state) {
    at = next[at];
  }
  benchmark::DoNotOptimize(at);
  state.SetItemsProcessed(state.iterations());
}

// --- readers on both cores, a writer churning ------------------------------------------------

constexpr std::size_t kChurnKeys = 100000;
constexpr int kUpdatesPerBatch = 100;
constexpr auto kBatchEvery = std::chrono::microseconds(800);  // 125k updates/s when on time

struct Churn {
  std::unique_ptr<Dataset> data;
  std::thread writer;
  std::atomic<bool> stop{false};
  std::atomic<long> updates{0};
  std::chrono::steady_clock::time_point started;
  bool baseline = false;
} g_churn;

void WriterLoop() {
  std::mt19937_64 rng(3);
  auto next = std::chrono::steady_clock::now();
  while (!g_churn.stop.load(std::memory_order_relaxed)) {
    if (g_churn.baseline) {
      for (int u = 0; u < kUpdatesPerBatch; ++u) {
        std::lock_guard<std::mutex> lock(g_churn.data->map_mu);
        g_churn.data->map[Key(rng() % kChurnKeys)] = static_cast<std::int64_t>(1 + rng() % 2);
      }
    } else {
      RouteTable::Batch b;
      for (int u = 0; u < kUpdatesPerBatch; ++u) {
        b.Put(kRoute, Key(rng() % kChurnKeys), static_cast<std::int64_t>(1 + rng() % 2),
              std::chrono::hours(1));
      }
      g_churn.data->table->Apply(std::move(b));
    }
    g_churn.updates.fetch_add(kUpdatesPerBatch, std::memory_order_relaxed);
    next += kBatchEvery;
    std::this_thread::sleep_until(next);
  }
}

void StartChurn(bool baseline) {
  if (!g_churn.data) g_churn.data = std::make_unique<Dataset>(kChurnKeys);
  g_churn.baseline = baseline;
  g_churn.stop = false;
  g_churn.updates = 0;
  g_churn.started = std::chrono::steady_clock::now();
  g_churn.writer = std::thread(WriterLoop);
}
void StartChurnCellroute(const benchmark::State&) { StartChurn(false); }
// The same readers with no writer: the p99.9 the churning run is compared with.
void StartIdle(const benchmark::State&) {
  if (!g_churn.data) g_churn.data = std::make_unique<Dataset>(kChurnKeys);
  g_churn.started = std::chrono::steady_clock::now();
  g_churn.updates = 0;
}
void StopIdle(const benchmark::State&) {}
void StartChurnBaseline(const benchmark::State&) { StartChurn(true); }
void StopChurn(const benchmark::State&) {
  g_churn.stop = true;
  g_churn.writer.join();
}

template <bool kBaseline>
void BM_ChurnLookup(benchmark::State& state) {
  Dataset& d = *g_churn.data;
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919;
  std::int64_t found = 0;
  std::int64_t worst_ns = 0, timed_count = 0, slow_count = 0;
  std::vector<std::int64_t> samples;
  samples.reserve(1 << 20);
  for (auto _ : state) {
    // Time one lookup in 64: the slowest tells whether a reader ever waits for the writer.
    bool timed = (i & 63) == 0;
    auto t0 = timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
    const std::string& key = d.cold[i++ & (kSample - 1)];
    if constexpr (kBaseline) {
      std::lock_guard<std::mutex> lock(d.map_mu);
      auto it = d.map.find(key);
      found += it == d.map.end() ? 0 : it->second;
    } else {
      RouteTable::Reader r(*d.table);
      found += r.Lookup(kRoute, key).cell_id;
    }
    if (timed) {
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::steady_clock::now() - t0)
                    .count();
      worst_ns = std::max<std::int64_t>(worst_ns, ns);
      if (samples.size() < samples.capacity()) samples.push_back(ns);
      ++timed_count;
      slow_count += ns > 10'000;
    }
  }
  benchmark::DoNotOptimize(found);
  state.SetItemsProcessed(state.iterations());
  // With two readers and a writer on two cores, any lookup can be preempted; what separates a
  // reader that waits for the writer is how often a lookup takes over 10 us.
  if (!samples.empty()) {
    auto at = samples.begin() + static_cast<std::ptrdiff_t>(samples.size() * 999 / 1000);
    std::nth_element(samples.begin(), at, samples.end());
    state.counters["p999_ns"] =
        benchmark::Counter(static_cast<double>(*at), benchmark::Counter::kAvgThreads);
  }
  state.counters["worst_sampled_ns"] =
      benchmark::Counter(static_cast<double>(worst_ns), benchmark::Counter::kAvgThreads);
  state.counters["over_10us_per_million"] = benchmark::Counter(
      timed_count ? 1e6 * static_cast<double>(slow_count) / static_cast<double>(timed_count) : 0,
      benchmark::Counter::kAvgThreads);
  if (state.thread_index() == 0 && g_churn.writer.joinable()) {  // not for the idle run
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                                g_churn.started)
                      .count();
    state.counters["writer_updates_per_s"] = static_cast<double>(g_churn.updates.load()) / secs;
  }
}

}  // namespace

void RegisterTableBenchmarks(bool short_mode) {
  std::vector<std::int64_t> sizes = short_mode ? std::vector<std::int64_t>{1000, 100000}
                                               : std::vector<std::int64_t>{1000, 1000000, 10000000};
  for (std::int64_t n : sizes) {
    for (int warm : {1, 0}) {
      benchmark::RegisterBenchmark("Lookup/cellroute", BM_Lookup_cellroute)->Args({n, warm});
      benchmark::RegisterBenchmark("Lookup/cellroute-held", BM_Lookup_cellroute_held)
          ->Args({n, warm});
      benchmark::RegisterBenchmark("Lookup/baseline", BM_Lookup_baseline)->Args({n, warm});
      benchmark::RegisterBenchmark("Lookup/absl-rcu", BM_Lookup_absl_rcu)->Args({n, warm});
    }
  }
  benchmark::RegisterBenchmark("DramFloor", BM_DramFloor)
      ->Arg(short_mode ? std::int64_t{64} << 20 : std::int64_t{1} << 30);
  benchmark::RegisterBenchmark("ChurnLookup/cellroute", BM_ChurnLookup<false>)
      ->Threads(2)
      ->UseRealTime()
      ->Setup(StartChurnCellroute)
      ->Teardown(StopChurn);
  benchmark::RegisterBenchmark("ChurnLookup/idle", BM_ChurnLookup<false>)
      ->Threads(2)
      ->UseRealTime()
      ->Setup(StartIdle)
      ->Teardown(StopIdle);
  benchmark::RegisterBenchmark("ChurnLookup/baseline", BM_ChurnLookup<true>)
      ->Threads(2)
      ->UseRealTime()
      ->Setup(StartChurnBaseline)
      ->Teardown(StopChurn);
}

}  // namespace cellroute::bench
