// The event log: delivery in order on its own thread, a bounded queue that never makes an
// emitter wait, drops reported, callbacks that throw or drop the last reference, and the JSON
// line every event becomes.
#include <cellroute/events.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "common/test_util.h"

using cellroute::Event;
using cellroute::EventLog;
using namespace std::chrono_literals;

namespace {

using Received = cellroute::testing::EventRecorder;

Event Numbered(std::uint64_t n) {
  Event e;
  e.kind = Event::Kind::kSyncFailed;
  e.code = "UNAVAILABLE";
  e.count = n;
  return e;
}

}  // namespace

TEST_CASE("events are delivered in order on the log's own thread") {
  Received got;
  auto log = EventLog::Start(got.Callback());
  REQUIRE(log);
  for (std::uint64_t i = 1; i <= 100; ++i) log->Emit(Numbered(i));
  REQUIRE(got.WaitFor(100));
  auto events = got.Snapshot();
  for (std::size_t i = 0; i < events.size(); ++i) {
    CHECK(events[i].count == i + 1);
    CHECK(events[i].unix_ms > 0);  // stamped when emitted
    CHECK(got.threads[i] != std::this_thread::get_id());
  }
  CHECK(log->dropped() == 0);
}

TEST_CASE("no callback, no log") { CHECK(EventLog::Start(nullptr) == nullptr); }

TEST_CASE("a slow callback never makes an emitter wait; what does not fit is dropped and reported") {
  std::mutex gate;
  std::unique_lock<std::mutex> closed(gate);  // the callback blocks until the test opens it
  std::atomic<bool> entered{false};
  Received got;
  auto deliver = got.Callback();
  auto log = EventLog::Start(
      [&](const Event& e) {
        entered = true;
        std::lock_guard<std::mutex> wait(gate);
        deliver(e);
      },
      /*capacity=*/8);
  REQUIRE(log);
  // The first event is taken by the thread, which then blocks in the callback; 8 more fill
  // the queue; the rest are dropped. None of these calls waits for the callback.
  log->Emit(Numbered(0));
  while (!entered) std::this_thread::sleep_for(1ms);
  auto started = std::chrono::steady_clock::now();
  for (std::uint64_t i = 1; i <= 100; ++i) log->Emit(Numbered(i));
  CHECK(std::chrono::steady_clock::now() - started < 2s);  // (the callback is blocked forever)
  CHECK(log->dropped() == 92);
  closed.unlock();
  // 0..8, then events_dropped (92) in the place of the events it stands for: after the last
  // one queued before them.
  REQUIRE(got.WaitFor(10));
  auto events = got.Snapshot();
  REQUIRE(events.size() == 10);
  for (std::size_t i = 0; i < 9; ++i) {
    CHECK(events[i].kind == Event::Kind::kSyncFailed);
    CHECK(events[i].count == i);
  }
  CHECK(events[9].kind == Event::Kind::kEventsDropped);
  CHECK(events[9].count == 92);
  // Room again: later events are queued, and a later drop is reported where it happened.
  log->Emit(Numbered(200));
  REQUIRE(got.WaitFor(11));
  CHECK(got.Snapshot()[10].count == 200);
}

TEST_CASE("a callback that throws does not end the log") {
  Received got;
  auto deliver = got.Callback();
  auto log = EventLog::Start([&](const Event& e) {
    deliver(e);
    throw std::runtime_error("the embedder's bug");
  });
  REQUIRE(log);
  log->Emit(Numbered(1));
  log->Emit(Numbered(2));
  REQUIRE(got.WaitFor(2));
}

TEST_CASE("closing delivers what is queued, and nothing is delivered after it returns") {
  std::atomic<int> delivered{0};
  auto log = EventLog::Start([&](const Event&) {
    std::this_thread::sleep_for(1ms);
    ++delivered;
  });
  REQUIRE(log);
  for (std::uint64_t i = 0; i < 50; ++i) log->Emit(Numbered(i));
  log->Close();
  CHECK(delivered.load() == 50);
  log->Emit(Numbered(51));  // dropped: the log is closed
  std::this_thread::sleep_for(20ms);
  CHECK(delivered.load() == 50);
  CHECK(log->dropped() == 1);
}

TEST_CASE("a callback may drop the last reference to its own log") {
  std::shared_ptr<EventLog> log;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  log = EventLog::Start([&](const Event&) {
    std::shared_ptr<EventLog> last;
    {
      std::lock_guard<std::mutex> lock(mu);
      last = std::move(log);
    }
    last.reset();  // the log is destroyed here, on its own thread: it must not wait for itself
    std::lock_guard<std::mutex> lock(mu);
    done = true;
    cv.notify_all();
  });
  REQUIRE(log);
  std::shared_ptr<EventLog> keep = log;  // emitted through a copy, released before delivery
  keep->Emit(Numbered(1));
  keep.reset();
  auto started = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu);
  REQUIRE(cv.wait_for(lock, 5s, [&] { return done; }));
  // Well under the 2 s stop deadline: the log did not wait for the thread it runs on.
  CHECK(std::chrono::steady_clock::now() - started < 1500ms);
}

TEST_CASE("an event is one line of JSON: time, event, then the fields that are set") {
  Event e;
  e.kind = Event::Kind::kTopologyChanged;
  e.unix_ms = 1764667443120;  // 2025-12-02T09:24:03.120Z
  e.old_hash = "aaaa";
  e.new_hash = "bbbb";
  e.message = "bytes \xff that are not UTF-8, and a \"quote\"\n";
  std::string line = e.ToJson();
  CHECK(line.find('\n') == std::string::npos);
  CHECK(line.rfind(R"({"time":"2025-12-02T09:24:03.120Z","event":"topology_changed",)", 0) == 0);
  auto j = nlohmann::json::parse(line);
  CHECK(j["old_hash"] == "aaaa");
  CHECK(j["new_hash"] == "bbbb");
  CHECK(j["message"] == "bytes \xEF\xBF\xBD that are not UTF-8, and a \"quote\"\n");
  CHECK_FALSE(j.contains("code"));  // unset fields are left out
  CHECK_FALSE(j.contains("count"));

  Event full;
  full.kind = Event::Kind::kQueueFull;
  full.unix_ms = 1;
  CHECK(nlohmann::json::parse(full.ToJson())["count"] == 0);  // a count kind always has one
  CHECK(cellroute::EventTime(0) == "1970-01-01T00:00:00.000Z");
}

TEST_CASE("every kind has its own name") {
  std::set<std::string_view> names;
  for (int k = 0; k <= static_cast<int>(Event::Kind::kEventsDropped); ++k) {
    auto name = cellroute::EventName(static_cast<Event::Kind>(k));
    CHECK(name != "unknown");
    names.insert(name);
  }
  CHECK(names.size() == static_cast<std::size_t>(Event::Kind::kEventsDropped) + 1);
}
