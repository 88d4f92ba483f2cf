// Readers check every answer against what was published while writers churn: no torn batch,
// no version older than one already seen, no lost update. Run under ThreadSanitizer too
// (make test-tsan), where a missing happens-before edge in publication or reclamation shows.
#include <cellroute/table.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <map>
#include <mutex>
#include <string>
#include <thread>

using cellroute::ClassifyType;
using cellroute::RouteTable;
using cellroute::TableHit;

namespace {

constexpr int kKeys = 64;
constexpr auto kRoute = ClassifyType::kClaimRoute;

std::string Key(int i) { return "group-" + std::to_string(i); }

cellroute::Topology OneCell(std::int64_t id) {
  return cellroute::Topology::FromCells({{id, "cell:" + std::to_string(id), "", {}}}, "stress")
      .value();
}

}  // namespace

TEST_CASE("readers see whole batches, in order, while writers churn") {
  RouteTable::Batch first;
  // Each batch stamps every key, and the legacy cell, with one id: a reader that ever sees two
  // ids in one Reader has seen a torn batch.
  first.SetTopology(OneCell(1));
  for (int k = 0; k < kKeys; ++k) first.Put(kRoute, Key(k), 1);
  cellroute::TableOptions options;
  options.reclaim_batch = 256;  // reclaim often, to race frees against reads
  RouteTable table(options);
  table.Apply(std::move(first));

  constexpr int kWriters = 2;
  constexpr int kBatchesPerWriter = 600;
  std::atomic<int> writers_done{0};
  std::mutex log_mu;
  std::map<std::uint64_t, std::int64_t> published;  // version -> stamp

  std::atomic<long> torn{0}, went_back{0}, wrong_stamp{0}, reads{0};
  std::mutex seen_mu;
  std::map<std::uint64_t, std::int64_t> seen;  // version -> stamp, as readers saw it

  auto reader = [&] {
    std::uint64_t last_version = 0;
    while (writers_done.load() < kWriters) {
      RouteTable::Reader r(table);
      std::uint64_t v = r.version();
      if (v < last_version) ++went_back;
      last_version = v;
      std::int64_t stamp = r.topology()->legacy().id;
      // Several passes with a yield between them: the snapshot stays in use while writers
      // publish and reclaim, which is what reclamation must survive.
      for (int pass = 0; pass < 3; ++pass) {
        for (int k = 0; k < kKeys; ++k) {
          TableHit hit = r.Lookup(kRoute, Key(k));
          if (hit.kind != TableHit::Kind::kPositive || hit.cell_id != stamp) ++torn;
        }
        std::this_thread::yield();
      }
      // Keys churned by the writers: present exactly when the stamp is even.
      TableHit extra = r.Lookup(ClassifyType::kClaimUsername, "churn-" + std::to_string(stamp % 7));
      if ((extra.kind == TableHit::Kind::kPositive) != (stamp % 2 == 0)) ++wrong_stamp;
      ++reads;
      if (reads % 64 == 0) {
        std::lock_guard<std::mutex> lock(seen_mu);
        seen[v] = stamp;
      }
    }
  };

  auto writer = [&](int w) {
    for (int i = 0; i < kBatchesPerWriter; ++i) {
      std::int64_t stamp = static_cast<std::int64_t>(w + 1) * 1'000'000 + i + 2;
      RouteTable::Batch b;
      b.SetTopology(OneCell(stamp));
      for (int k = 0; k < kKeys; ++k) b.Put(kRoute, Key(k), stamp);
      for (int c = 0; c < 7; ++c)
        b.Erase(ClassifyType::kClaimUsername, "churn-" + std::to_string(c));
      if (stamp % 2 == 0) {
        b.Put(ClassifyType::kClaimUsername, "churn-" + std::to_string(stamp % 7), stamp);
      }
      std::lock_guard<std::mutex> lock(log_mu);  // so the log's order is the versions' order
      std::uint64_t v = table.Apply(std::move(b));
      published[v] = stamp;
    }
    ++writers_done;
  };

  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) threads.emplace_back(reader);
  for (int w = 0; w < kWriters; ++w) threads.emplace_back(writer, w);
  for (auto& t : threads) t.join();

  CHECK(reads > 0);
  CHECK(torn == 0);
  CHECK(went_back == 0);
  CHECK(wrong_stamp == 0);
  // What readers saw at a version is what was published as that version.
  for (const auto& [v, stamp] : seen) {
    if (v == 1) continue;  // the initial batch
    REQUIRE(published.count(v) == 1);
    CHECK(published[v] == stamp);
  }
  // No lost update: the final state is the last batch applied.
  RouteTable::Reader last(table);
  CHECK(last.version() == published.rbegin()->first);
  CHECK(last.topology()->legacy().id == published.rbegin()->second);
  CHECK(last.Lookup(kRoute, Key(0)).cell_id == published.rbegin()->second);
  CHECK(table.stats().entries ==
        static_cast<std::size_t>(kKeys) + (published.rbegin()->second % 2 == 0 ? 1 : 0));
}
