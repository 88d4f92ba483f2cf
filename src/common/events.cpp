// EventLog: a bounded queue of events and one thread that hands them to the embedder's callback.
#include "cellroute/events.h"

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/clock.h"

namespace cellroute {

std::string EventTime(std::int64_t unix_ms) {
  std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[80];  // room for any int the format could print
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(unix_ms % 1000));
  return buf;
}

std::string_view EventName(Event::Kind kind) noexcept {
  switch (kind) {
    case Event::Kind::kSyncSucceeded:
      return "sync_succeeded";
    case Event::Kind::kSyncFailed:
      return "sync_failed";
    case Event::Kind::kAnswerRejected:
      return "answer_rejected";
    case Event::Kind::kTopologyChanged:
      return "topology_changed";
    case Event::Kind::kReloadSucceeded:
      return "reload_succeeded";
    case Event::Kind::kReloadFailed:
      return "reload_failed";
    case Event::Kind::kQueueFull:
      return "queue_full";
    case Event::Kind::kSnapshotWritten:
      return "snapshot_written";
    case Event::Kind::kSnapshotFailed:
      return "snapshot_failed";
    case Event::Kind::kSnapshotUnreadable:
      return "snapshot_unreadable";
    case Event::Kind::kEventsDropped:
      return "events_dropped";
  }
  return "unknown";
}

std::string Event::ToJson() const {
  // An ordered object, so that every line reads time, event, then the details.
  nlohmann::ordered_json j;
  j["time"] = EventTime(unix_ms);
  j["event"] = std::string(EventName(kind));
  auto put = [&](const char* key, const std::string& value) {
    if (!value.empty()) j[key] = value;
  };
  put("code", code);
  put("method", method);
  put("old_hash", old_hash);
  put("new_hash", new_hash);
  put("path", path);
  if (count > 0 || kind == Kind::kQueueFull || kind == Kind::kEventsDropped) j["count"] = count;
  put("message", message);
  // Bytes that are not UTF-8 (a message quoting a hostile answer) become U+FFFD, as in
  // internal::DumpJson.
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

struct EventLog::State {
  EventCallback callback;
  std::size_t capacity = EventLog::kDefaultCapacity;
  std::chrono::milliseconds stop_deadline{2000};
  pid_t pid = 0;

  std::mutex mu;
  std::condition_variable wake;  // the thread: an event, or stop
  std::condition_variable idle;  // the stopper: the thread has finished
  // Each event with the number of events dropped right after it (the queue was full): the
  // thread reports those, in their place, once the event is delivered.
  struct Queued {
    Event event;
    std::uint64_t dropped_after = 0;
  };
  std::deque<Queued> queue;
  bool stopping = false;
  bool abandoned = false;  // past the stop deadline: deliver nothing more
  bool finished = false;
  std::thread::id thread_id;
  std::atomic<std::uint64_t> dropped{0};

  void Deliver(const Event& e) noexcept {
    try {
      callback(e);
    } catch (...) {  // the embedder's exception is theirs: it must not end the log
    }
  }

  void Run() {
    for (;;) {
      Queued q;
      {
        std::unique_lock<std::mutex> lock(mu);
        wake.wait(lock, [&] { return stopping || !queue.empty(); });
        if (abandoned || queue.empty()) break;
        q = std::move(queue.front());
        queue.pop_front();
      }
      Deliver(q.event);
      if (q.dropped_after > 0) {
        Event d;
        d.kind = Event::Kind::kEventsDropped;
        d.unix_ms = q.event.unix_ms;
        d.count = q.dropped_after;
        d.message = std::to_string(q.dropped_after) + " event(s) dropped: the queue was full";
        Deliver(d);
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    finished = true;
    idle.notify_all();
  }
};

std::shared_ptr<EventLog> EventLog::Start(EventCallback callback, std::size_t capacity,
                                          std::chrono::milliseconds stop_deadline) {
  if (!callback) return nullptr;
  auto state = std::make_shared<State>();
  state->callback = std::move(callback);
  state->capacity = capacity == 0 ? 1 : capacity;
  state->stop_deadline = stop_deadline;
  state->pid = getpid();
  try {
    // The thread holds the state: it may outlive the log when stopping gives up on it.
    std::thread t([state] { state->Run(); });
    {
      std::lock_guard<std::mutex> lock(state->mu);
      state->thread_id = t.get_id();
    }
    t.detach();
  } catch (const std::system_error&) {
    return nullptr;
  }
  return std::shared_ptr<EventLog>(new EventLog(std::move(state)));
}

EventLog::EventLog(std::shared_ptr<State> state) : state_(std::move(state)) {}

EventLog::~EventLog() { Close(); }

void EventLog::Close() noexcept {
  State& s = *state_;
  if (getpid() != s.pid) return;  // a forked child: the thread is not here, its lock may be held
  std::unique_lock<std::mutex> lock(s.mu);
  if (s.stopping && (s.finished || s.abandoned)) return;
  s.stopping = true;
  s.wake.notify_all();
  // The callback itself dropped the last reference: it cannot wait for itself. The thread
  // finishes the queue and ends once the callback returns.
  if (std::this_thread::get_id() == s.thread_id) return;
  if (!s.idle.wait_for(lock, s.stop_deadline, [&] { return s.finished; })) s.abandoned = true;
}

void EventLog::Emit(Event event) noexcept {
  State& s = *state_;
  if (getpid() != s.pid) {
    s.dropped.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (event.unix_ms == 0) event.unix_ms = internal::UnixMs();
  try {
    std::lock_guard<std::mutex> lock(s.mu);
    if (!s.stopping && s.queue.size() < s.capacity) {
      s.queue.push_back({std::move(event), 0});
      s.wake.notify_one();
      return;
    }
    // Full (capacity >= 1, so there is a last event to follow), or stopping (not reported).
    if (!s.stopping && !s.queue.empty()) ++s.queue.back().dropped_after;
  } catch (...) {  // out of memory: the event is lost, nothing else
  }
  s.dropped.fetch_add(1, std::memory_order_relaxed);
}

std::uint64_t EventLog::dropped() const noexcept {
  return state_->dropped.load(std::memory_order_relaxed);
}

const EventCallback& EventLog::callback() const noexcept { return state_->callback; }

}  // namespace cellroute
