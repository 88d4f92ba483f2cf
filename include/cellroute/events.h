// Events for logs: what the Topology Service sync, the snapshot and reloads did, delivered to
// a callback the embedder registers, one at a time, on a thread of the log's own.
//
//   cellroute::RouterConfig config;
//   config.on_event = [](const cellroute::Event& e) { std::cerr << e.ToJson() << "\n"; };
//   auto built = cellroute::BuildRouter(config);
//   // {"time":"2026-12-02T09:14:03.120Z","event":"sync_failed","code":"UNAVAILABLE",...}
//
// Events are emitted where things happen (the poller, a fetcher, a reload) and queued; an
// EventLog thread calls the callback. Emitting never waits for the callback, and nothing on the
// routing path emits but "queue_full", at most once a second. The queue is bounded: past it an
// event is dropped, and "events_dropped" with the count is delivered in its place: right after
// the last event queued before the drops.
// A callback that throws is ignored (the exception is swallowed); a slow one only delays later
// events. Stopping a log (its last reference dropped) delivers what is queued, for up to a
// deadline, and ends the thread; the callback is never called after that returns (unless the
// last reference was dropped by the callback itself, which then returns first).
//
// Fork: the log's thread does not survive fork(). In a child, events emitted before the router
// is rebuilt (RebuildAfterFork, which starts a new log with the same callback) are dropped.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cellroute/export.h"

namespace cellroute {

struct Event {
  enum class Kind : std::uint8_t {
    kSyncSucceeded,       // GetCells answered and the answer was valid (every poll)
    kSyncFailed,          // GetCells failed: `code` is the gRPC code name
    kAnswerRejected,      // the service answered with data that breaks its contract; kept the
                          // last good state. `method`: GetCells or Classify
    kTopologyChanged,     // the cells served changed: `old_hash` -> `new_hash`
    kReloadSucceeded,     // a reload swapped new rules (and cells) in
    kReloadFailed,        // a reload changed nothing: `code` (invalid, unavailable), `message`
                          // lists every error
    kQueueFull,           // claims not asked for since the last such event: `count`
    kSnapshotWritten,     // `path`, `new_hash`
    kSnapshotFailed,      // the snapshot could not be written: `path`, `message`
    kSnapshotUnreadable,  // at start, the snapshot could not be served: `path`, `message`
    kEventsDropped,       // events lost to a full queue right after the one before: `count`
  };
  Kind kind = Kind::kSyncSucceeded;
  std::int64_t unix_ms = 0;  // when it happened
  std::string code;          // a gRPC code name, or a status code name for a reload
  std::string method;        // the Topology Service method, where there is one
  std::string message;       // what happened, for people
  std::string old_hash, new_hash;  // Topology::ContentHash() values
  std::string path;                // the snapshot file
  std::uint64_t count = 0;         // of the things the kind counts

  // One line of JSON: {"time":"<RFC 3339, UTC, ms>","event":"<name>", then every field set}.
  CELLROUTE_EXPORT std::string ToJson() const;
};

// "sync_succeeded", "sync_failed", "answer_rejected", "topology_changed", "reload_succeeded",
// "reload_failed", "queue_full", "snapshot_written", "snapshot_failed",
// "snapshot_unreadable", "events_dropped".
CELLROUTE_EXPORT std::string_view EventName(Event::Kind kind) noexcept;

// 2026-12-02T09:14:03.120Z: a Unix time in milliseconds as Event::ToJson writes "time", for
// tools that log lines beside cellroute's.
CELLROUTE_EXPORT std::string EventTime(std::int64_t unix_ms);

using EventCallback = std::function<void(const Event&)>;

class CELLROUTE_EXPORT EventLog {
 public:
  static constexpr std::size_t kDefaultCapacity = 1024;
  // Starts the thread that calls `callback`. Null when `callback` is empty (or no thread can be
  // started): a null log is a valid "no events" for every emitter.
  static std::shared_ptr<EventLog> Start(EventCallback callback,
                                         std::size_t capacity = kDefaultCapacity,
                                         std::chrono::milliseconds stop_deadline =
                                             std::chrono::milliseconds(2000));
  // Stops: see above. Close() does the same earlier; later events are dropped.
  ~EventLog();
  void Close() noexcept;
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Queues `event` (its time set now if unset). Never waits for the callback, never throws:
  // past the capacity, out of memory, once stopping, or in a process forked from the one that
  // started the log, the event is dropped and counted.
  void Emit(Event event) noexcept;
  // Events dropped so far.
  std::uint64_t dropped() const noexcept;
  const EventCallback& callback() const noexcept;

  struct State;

 private:
  explicit EventLog(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

}  // namespace cellroute
