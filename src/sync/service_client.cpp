// The Topology Service client: polls the cell list, fetches claims the table lacks, and keeps
// the last good topology (in memory and in an on-disk snapshot) whatever the service does.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "cellroute/topology_service.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/prometheus.h"
#include "common/shard.h"
#include "common/text.h"
#include "proto/classify_service.grpc.pb.h"

namespace cellroute {

namespace {

namespace ts = gitlab::cells::topology_service;
using Clock = std::chrono::steady_clock;

std::int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
      .count();
}

using internal::UnixMs;

// A snapshot is the cells in config.toml form under a comment that records when they were
// synced, so that a process started from it can say how old they are. A comment keeps the file
// a valid config.toml for any reader.
constexpr std::string_view kSyncedAt = "# cellroute snapshot, synced_at_unix_ms = ";

std::string SnapshotText(const Topology& topology) {
  return std::string(kSyncedAt) + std::to_string(UnixMs()) + "\n" + topology.ToToml();
}

// The sync time a snapshot records, or 0 (an older snapshot, or a config.toml put there).
std::int64_t SnapshotSyncedUnixMs(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line) || line.compare(0, kSyncedAt.size(), kSyncedAt) != 0) return 0;
  std::int64_t ms = 0;
  const char* begin = line.data() + kSyncedAt.size();
  auto [end, ec] = std::from_chars(begin, line.data() + line.size(), ms);
  return ec == std::errc() && end == line.data() + line.size() && ms > 0 ? ms : 0;
}

std::string CodeName(grpc::StatusCode code) {
  auto n = static_cast<int>(code);
  if (n < 0 || n > static_cast<int>(grpc::StatusCode::UNAUTHENTICATED)) {
    return "code " + std::to_string(n);  // not a gRPC code
  }
  return std::string(GrpcCodeName(n));
}

// Sets the Claim oneof field for a claim type; false when the value cannot be such a claim.
bool SetClaim(ClassifyType type, std::string_view value, ts::types::v1::Claim* claim) {
  std::string v(value);
  auto as_int = [&](auto setter) {
    std::int64_t n = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (ec != std::errc() || end != value.data() + value.size()) return false;
    setter(n);
    return true;
  };
  switch (type) {
    case ClassifyType::kClaimRoute:
      claim->set_route(v);
      return true;
    case ClassifyType::kClaimOrganizationPath:
      claim->set_organization_path(v);
      return true;
    case ClassifyType::kClaimRedirectRoute:
      claim->set_redirect_route(v);
      return true;
    case ClassifyType::kClaimUsername:
      claim->set_username(v);
      return true;
    case ClassifyType::kClaimEmail:
      claim->set_email(v);
      return true;
    case ClassifyType::kClaimProjectId:
      return as_int([&](std::int64_t n) { claim->set_project_id(n); });
    case ClassifyType::kClaimNamespaceId:
      return as_int([&](std::int64_t n) { claim->set_namespace_id(n); });
    case ClassifyType::kClaimGpgKey:
      claim->set_gpg_key(v);
      return true;
    case ClassifyType::kClaimSshKey:
      claim->set_ssh_key(v);
      return true;
    case ClassifyType::kClaimUserId:
      return as_int([&](std::int64_t n) { claim->set_user_id(n); });
    case ClassifyType::kClaimOrganizationId:
      return as_int([&](std::int64_t n) { claim->set_organization_id(n); });
    case ClassifyType::kClaimServiceDeskCustomEmail:
      claim->set_service_desk_custom_email(v);
      return true;
    default:
      return false;
  }
}

// Writes `text` to `path` so that a reader sees the old file or the new one, never a part.
Status WriteAtomically(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) return Status::Unavailable(tmp + ": cannot write");
  }
  if (FILE* f = std::fopen(tmp.c_str(), "rb")) {
    fsync(fileno(f));
    std::fclose(f);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return Status::Unavailable(path + ": cannot replace snapshot");
  }
  return Status::Ok();
}

// The cells of a GetCells answer, validated as a whole as a file's are.
Result<Topology> TopologyFromAnswer(const ts::GetCellsResponse& resp, std::string_view source) {
  std::vector<Cell> cells;
  for (const auto& ci : resp.cells()) {
    Cell c;
    c.id = ci.id();
    c.address = ci.address();
    c.session_prefix = ci.session_prefix();
    if (ci.has_sequence_range()) {
      c.sequence_ranges.push_back({ci.sequence_range().minval(), ci.sequence_range().maxval()});
    }
    for (const auto& r : ci.sequence_ranges())
      c.sequence_ranges.push_back({r.minval(), r.maxval()});
    cells.push_back(std::move(c));
    if (cells.size() > kMaxCells) break;  // FromCells refuses it; no need to copy the rest
  }
  return Topology::FromCells(std::move(cells), source);
}

// The owner a Classify answer names: a PROXY action to the address of a cell we know.
Result<std::int64_t> OwnerFromAnswer(const ts::ClassifyResponse& resp, const Topology* topology) {
  if (topology == nullptr) return Status::Unavailable("no topology known to check it against");
  if (resp.action() != ts::PROXY) {
    return Status::Invalid("action " + std::to_string(resp.action()) + " is not PROXY");
  }
  for (const Cell& c : topology->cells()) {
    if (c.address == resp.proxy().address()) return c.id;
  }
  nlohmann::json shown = resp.proxy().address();
  return Status::Invalid("address " + internal::DumpJson(shown) + " is no known cell's");
}

}  // namespace

namespace wire {

Result<Topology> ParseGetCellsResponse(std::string_view bytes, std::string_view source) {
  ts::GetCellsResponse resp;
  if (bytes.size() > static_cast<std::size_t>(INT32_MAX) ||
      !resp.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return Status::Invalid(std::string(source) + ": not a GetCellsResponse");
  }
  return TopologyFromAnswer(resp, source);
}

Result<std::int64_t> ParseClassifyResponse(std::string_view bytes, const Topology& topology) {
  ts::ClassifyResponse resp;
  if (bytes.size() > static_cast<std::size_t>(INT32_MAX) ||
      !resp.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return Status::Invalid("not a ClassifyResponse");
  }
  return OwnerFromAnswer(resp, &topology);
}

}  // namespace wire

struct TopologyServiceClient::Impl : std::enable_shared_from_this<Impl> {
  TopologyServiceOptions opt;
  std::shared_ptr<RouteTable> table;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<ts::ClassifyService::Stub> stub;

  mutable std::mutex mu;
  std::condition_variable wake;      // sleepers: the poller and retry backoffs; signals stop
  std::condition_variable queue_cv;  // fetchers: work or stop
  std::condition_variable events;    // a poll ended, a thread exited
  bool stopping = false;
  std::set<grpc::ClientContext*> active_calls;  // cancelled by Stop
  std::size_t waiting_callbacks = 0;
  std::uint64_t dropped = 0;
  std::string source, last_error;
  std::int64_t last_good_ms = -1;
  // When the snapshot served at start was synced (Unix ms; 0: not known), until a poll succeeds.
  std::int64_t snapshot_synced_unix_ms = 0;
  std::string snapshot_error;  // why the snapshot was not served at start
  bool last_poll_ok = false;
  bool polled = false;
  std::mt19937_64 rng{std::random_device{}()};

  using Key = std::pair<int, std::string>;
  using KeyView = std::pair<int, std::string_view>;
  // Finds an in-flight key from a view: asking about a key already being fetched (every request
  // for an entry past its refresh time does) allocates nothing.
  struct KeyLess {
    using is_transparent = void;
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const noexcept {
      return a.first != b.first ? a.first < b.first
                                : std::string_view(a.second) < std::string_view(b.second);
    }
  };
  std::map<Key, std::vector<std::function<void()>>, KeyLess> inflight;
  std::deque<Key> queue;

  std::atomic<std::uint64_t> calls{0}, errors{0}, retries{0}, rejected{0};
  // Every attempt, by method and by the code it ended with, and how long it took.
  enum Method : std::size_t { kGetCells, kClassify, kMethods };
  static constexpr std::array<double, 11> kCallBounds = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                         0.25,  0.5,   1,    2.5,   5};
  static constexpr std::size_t kCodes = 17;
  struct CallCounters {
    std::array<std::atomic<std::uint64_t>, kCodes> by_code{};
    std::array<std::atomic<std::uint64_t>, kCallBounds.size() + 1> latency{};
    std::atomic<std::uint64_t> latency_sum_us{0};
  };
  std::array<CallCounters, kMethods> call_counters;
  void CountCall(Method m, grpc::StatusCode code, std::chrono::steady_clock::duration took) {
    CallCounters& c = call_counters[m];
    auto index = static_cast<std::size_t>(code);
    c.by_code[index < kCodes ? index : static_cast<std::size_t>(grpc::StatusCode::UNKNOWN)]
        .fetch_add(1, std::memory_order_relaxed);
    double seconds = std::chrono::duration<double>(took).count();
    std::size_t b = 0;
    while (b < kCallBounds.size() && seconds > kCallBounds[b]) ++b;
    c.latency[b].fetch_add(1, std::memory_order_relaxed);
    c.latency_sum_us.fetch_add(
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(took).count()),
        std::memory_order_relaxed);
  }
  // Counters that routing threads bump on every request: one cache line per shard, so threads
  // do not fight over a shared line; status() adds the shards up.
  struct alignas(64) LookupCounters {
    std::atomic<std::uint64_t> hits{0}, misses{0}, negative_hits{0}, fallbacks{0};
  };
  static constexpr std::size_t kShards = 16;
  std::array<LookupCounters, kShards> lookup_counters;
  LookupCounters& MyCounters() noexcept { return lookup_counters[internal::ThreadShard(kShards)]; }

  // The poller is threads[0], the fetchers follow; finished[i] is set as thread i exits.
  std::vector<std::thread> threads;
  std::vector<char> finished;

  // Runs `body` on a new thread that keeps this Impl alive until it has returned.
  void Spawn(void (Impl::*body)()) {
    std::size_t index = threads.size();
    finished.push_back(0);
    threads.emplace_back([self = shared_from_this(), body, index] {
      ((*self).*body)();
      std::lock_guard<std::mutex> lock(self->mu);
      self->finished[index] = 1;
      self->events.notify_all();
    });
  }

  void SetError(std::string e) {
    std::lock_guard<std::mutex> lock(mu);
    last_error = std::move(e);
  }

  void Emit(Event::Kind kind, std::string message, std::string method = {},
            std::string code = {}) noexcept {
    if (!opt.events) return;
    try {
      Event e;
      e.kind = kind;
      e.method = std::move(method);
      e.code = std::move(code);
      e.message = std::move(message);
      opt.events->Emit(std::move(e));
    } catch (...) {  // out of memory: a log line is not worth more
    }
  }
  void Emit(Event e) noexcept {
    if (opt.events) opt.events->Emit(std::move(e));
  }

  // Fetches dropped since the last queue_full event; one such event a second at most, so a
  // flood of requests past max_pending makes one line, not one per request.
  std::atomic<std::uint64_t> drops_unreported{0};
  std::atomic<std::int64_t> last_queue_full_ms{-1000};
  void ReportDrop() noexcept {
    if (!opt.events) return;
    drops_unreported.fetch_add(1, std::memory_order_relaxed);
    std::int64_t now = SteadyMs(), last = last_queue_full_ms.load(std::memory_order_relaxed);
    if (now - last < 1000 || !last_queue_full_ms.compare_exchange_strong(last, now)) return;
    try {
      Event e;
      e.kind = Event::Kind::kQueueFull;
      e.count = drops_unreported.exchange(0, std::memory_order_relaxed);
      e.message = "claims not asked of the Topology Service (the fetch queue is full: "
                  "max_pending); those requests decided as unavailable";
      Emit(std::move(e));
    } catch (...) {  // out of memory: the count is reported with the next one
    }
  }

  // Sleeps up to `d`; false when the client is stopping.
  bool Sleep(std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> lock(mu);
    return !wake.wait_for(lock, d, [&] { return stopping; });
  }

  std::chrono::milliseconds Jittered(std::chrono::milliseconds base, double fraction) {
    std::lock_guard<std::mutex> lock(mu);
    std::uniform_real_distribution<double> u(1.0 - fraction, 1.0 + fraction);
    return std::chrono::milliseconds(
        static_cast<std::int64_t>(static_cast<double>(base.count()) * u(rng)));
  }

  // One call with a deadline per attempt, retried with backoff on UNAVAILABLE and
  // DEADLINE_EXCEEDED only.
  template <typename Call>
  grpc::Status WithRetries(Method method, Call&& call, std::chrono::milliseconds per_attempt) {
    auto backoff = opt.backoff_initial;
    for (int attempt = 0;; ++attempt) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + per_attempt);
      for (const auto& [k, v] : opt.metadata) ctx.AddMetadata(internal::ToLower(k), v);
      {
        std::lock_guard<std::mutex> lock(mu);
        if (stopping) return grpc::Status(grpc::StatusCode::CANCELLED, "client stopping");
        active_calls.insert(&ctx);  // so that Stop can cancel it
      }
      ++calls;
      auto started = std::chrono::steady_clock::now();
      grpc::Status st = call(&ctx);
      CountCall(method, st.error_code(), std::chrono::steady_clock::now() - started);
      {
        std::lock_guard<std::mutex> lock(mu);
        active_calls.erase(&ctx);
      }
      if (st.ok() || st.error_code() == grpc::StatusCode::NOT_FOUND) return st;
      ++errors;
      bool retryable = st.error_code() == grpc::StatusCode::UNAVAILABLE ||
                       st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
      if (!retryable || attempt >= opt.max_retries) return st;
      ++retries;
      if (!Sleep(Jittered(backoff, 0.5))) return st;
      backoff = std::min(backoff * 2, opt.backoff_max);
    }
  }

  Status Poll() {
    ts::GetCellsResponse resp;
    grpc::Status st = WithRetries(
        kGetCells,
        [&](grpc::ClientContext* ctx) { return stub->GetCells(ctx, ts::GetCellsRequest(), &resp); },
        opt.call_deadline);
    if (!st.ok()) {
      std::string e = "GetCells: " + CodeName(st.error_code()) + ": " + st.error_message();
      std::string kept = KeptTopology();
      Emit(Event::Kind::kSyncFailed, e + kept, "GetCells", CodeName(st.error_code()));
      std::lock_guard<std::mutex> lock(mu);
      last_error = e + kept;
      last_poll_ok = false;
      polled = true;
      events.notify_all();
      return Status::Unavailable(e);
    }
    auto topo = TopologyFromAnswer(resp, "GetCells from " + opt.address);
    if (!topo.ok()) {
      ++rejected;
      std::string e = "rejected a GetCells answer: " + topo.status().message();
      std::string kept = KeptTopology();
      Emit(Event::Kind::kAnswerRejected, e + kept, "GetCells");
      std::lock_guard<std::mutex> lock(mu);
      last_error = e + kept;
      last_poll_ok = false;
      polled = true;
      events.notify_all();
      return Status::Invalid(e);
    }
    // The batch is built under a Reader and applied after it ends: a writer must not hold a
    // read section (Apply then could not wait for a grace period).
    RouteTable::Batch b;
    bool changed;
    std::string old_hash;
    {
      RouteTable::Reader r(*table);
      changed = r.topology() == nullptr || r.topology()->cells() != topo->cells();
      if (changed && r.topology() != nullptr) old_hash = r.topology()->ContentHash();
      // Answers naming cells that are gone would only send requests nowhere.
      if (const Topology* old = r.topology(); changed && old != nullptr) {
        for (const Cell& c : old->cells()) {
          if (!topo->FindById(c.id)) b.PurgeCell(c.id);
        }
      }
    }
    if (changed) {
      b.SetTopology(topo.value());
      table->Apply(std::move(b));
    }
    const std::string new_hash = topo->ContentHash();
    Event synced;
    synced.kind = Event::Kind::kSyncSucceeded;
    synced.method = "GetCells";
    synced.code = "OK";
    synced.new_hash = new_hash;
    synced.count = topo->cells().size();
    synced.message = std::to_string(topo->cells().size()) + " cells from " + opt.address;
    Emit(std::move(synced));
    if (changed) {
      Event e;
      e.kind = Event::Kind::kTopologyChanged;
      e.old_hash = std::move(old_hash);
      e.new_hash = new_hash;
      e.message = "now serving " + std::to_string(topo->cells().size()) +
                  " cells from the Topology Service";
      Emit(std::move(e));
    }
    Status snapshot_status;
    if (changed && !opt.snapshot_path.empty()) {
      snapshot_status = WriteAtomically(opt.snapshot_path, SnapshotText(*topo));
      Event e;
      e.kind = snapshot_status.ok() ? Event::Kind::kSnapshotWritten : Event::Kind::kSnapshotFailed;
      e.path = opt.snapshot_path;
      e.new_hash = new_hash;
      e.message = snapshot_status.ok() ? "snapshot written" : snapshot_status.message();
      Emit(std::move(e));
    }
    std::lock_guard<std::mutex> lock(mu);
    last_good_ms = SteadyMs();
    last_poll_ok = true;
    polled = true;
    events.notify_all();
    source = "topology_service";
    if (!snapshot_status.ok()) {
      last_error = snapshot_status.message();
    } else {
      last_error.clear();
    }
    return Status::Ok();
  }

  // What routing goes on with after a failed poll, as the end of its error message.
  std::string KeptTopology() const {
    RouteTable::Reader r(*table);
    return r.topology() != nullptr
               ? " (keeping the last good topology)"
               : " (no topology known: no snapshot, no static topology, no good answer yet)";
  }

  void PollLoop() {
    for (;;) {
      (void)Poll();
      if (!Sleep(Jittered(opt.poll_interval, opt.poll_jitter))) return;
    }
  }

  // Asks the service about one claim and records the answer in the table.
  void Classify(const Key& key) {
    auto type = static_cast<ClassifyType>(key.first);
    ts::ClassifyRequest req;
    if (!SetClaim(type, key.second, req.mutable_claim())) {
      // Not a value such a claim can have (a non-numeric project id): nobody owns it.
      table->PutNegative(type, key.second, opt.negative_ttl);
      return;
    }
    ts::ClassifyResponse resp;
    grpc::Status st =
        WithRetries(kClassify,
                    [&](grpc::ClientContext* ctx) { return stub->Classify(ctx, req, &resp); },
                    opt.classify_deadline);
    if (st.error_code() == grpc::StatusCode::NOT_FOUND) {
      table->PutNegative(type, key.second, opt.negative_ttl, opt.negative_ttl / 2);
      return;
    }
    if (!st.ok()) {
      SetError("Classify " + std::string(ClassifyTypeName(type)) + " '" + key.second +
               "': " + CodeName(st.error_code()) + ": " + st.error_message());
      return;
    }
    // The answer is an address; it must be one of the cells we know, or it is not believed.
    Result<std::int64_t> owner = [&] {
      RouteTable::Reader r(*table);
      return OwnerFromAnswer(resp, r.topology());
    }();
    if (!owner.ok()) {
      ++rejected;
      std::string e = "rejected a Classify answer for " + std::string(ClassifyTypeName(type)) +
                      " '" + key.second + "': " + owner.status().message();
      Emit(Event::Kind::kAnswerRejected, e, "Classify");
      SetError(std::move(e));
      return;
    }
    table->Put(type, key.second, owner.value(), opt.claim_ttl, opt.claim_refresh);
  }

  void FetchLoop() {
    for (;;) {
      Key key;
      {
        std::unique_lock<std::mutex> lock(mu);
        queue_cv.wait(lock, [&] { return stopping || !queue.empty(); });
        if (stopping) return;
        key = std::move(queue.front());
        queue.pop_front();
      }
      Classify(key);
      std::vector<std::function<void()>> waiters;
      {
        std::lock_guard<std::mutex> lock(mu);
        auto it = inflight.find(key);
        if (it != inflight.end()) {
          waiters = std::move(it->second);
          waiting_callbacks -= waiters.size();
          inflight.erase(it);
        }
      }
      // Running a callback, or dropping it, may release the last reference to the client
      // (a RouteAsync callback holds a Router): Stop then detaches this thread, and the Impl
      // lives on in this thread's own reference until the loop returns.
      for (auto& w : waiters) w();
    }
  }

  // Ends the threads: cancels calls in flight, wakes every sleeper, waits up to stop_deadline
  // for the threads, then runs the callbacks nobody will answer now. A thread still running
  // at the deadline (a call that ignores cancellation) and the calling thread itself, when it
  // is one of ours, are detached: each holds its own reference to this Impl.
  void Stop() {
    std::map<Key, std::vector<std::function<void()>>, KeyLess> abandoned;
    std::vector<std::thread> to_join;
    {
      std::unique_lock<std::mutex> lock(mu);
      if (stopping) return;
      stopping = true;
      abandoned.swap(inflight);
      waiting_callbacks = 0;
      queue.clear();
      for (grpc::ClientContext* ctx : active_calls) ctx->TryCancel();
      wake.notify_all();
      queue_cv.notify_all();
      auto self = std::this_thread::get_id();
      auto done = [&] {
        for (std::size_t i = 0; i < threads.size(); ++i) {
          if (!finished[i] && threads[i].get_id() != self) return false;
        }
        return true;
      };
      (void)events.wait_for(lock, opt.stop_deadline, done);
      for (std::size_t i = 0; i < threads.size(); ++i) {
        if (!threads[i].joinable()) continue;
        if (finished[i] && threads[i].get_id() != self) {
          to_join.push_back(std::move(threads[i]));
        } else {
          threads[i].detach();
        }
      }
    }
    for (auto& t : to_join) t.join();
    // Nobody will answer these: let their callers decide with what they have, once each.
    for (auto& [key, waiters] : abandoned) {
      for (auto& w : waiters) w();
    }
  }
};

std::string_view GrpcCodeName(int code) noexcept {
  // In the order of the codes' numbers (grpc::StatusCode, google.rpc.Code).
  static constexpr std::string_view kNames[] = {
      "OK",           "CANCELLED",         "UNKNOWN",           "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED", "NOT_FOUND",    "ALREADY_EXISTS",    "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",  "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL",         "UNAVAILABLE",       "DATA_LOSS",
      "UNAUTHENTICATED"};
  return code >= 0 && code < static_cast<int>(std::size(kNames)) ? kNames[code] : "UNKNOWN";
}

std::string_view StateName(TopologyServiceStatus::State s) noexcept {
  switch (s) {
    case TopologyServiceStatus::State::kStarting:
      return "starting";
    case TopologyServiceStatus::State::kSyncing:
      return "syncing";
    case TopologyServiceStatus::State::kServingStale:
      return "serving_stale";
    case TopologyServiceStatus::State::kFailed:
      return "failed";
  }
  return "unknown";
}

std::string TopologyServiceStatus::ToJson() const {
  nlohmann::json j = {{"state", std::string(StateName(state))},
                      {"topology_source", topology_source},
                      {"topology_hash", topology_hash},
                      {"table_version", table_version},
                      {"last_good_sync_age_ms", last_good_sync_age_ms},
                      {"last_error", last_error},
                      {"counters",
                       {{"calls", calls},
                        {"errors", errors},
                        {"retries", retries},
                        {"cache_hits", cache_hits},
                        {"misses", misses},
                        {"negative_hits", negative_hits},
                        {"fallbacks", fallbacks},
                        {"rejected_answers", rejected_answers},
                        {"pending_fetches", pending_fetches},
                        {"dropped_fetches", dropped_fetches}}}};
  return internal::DumpJson(j);
}

namespace {
// The process that first started a client, and so gRPC. A process forked from it inherits
// gRPC's state without its threads, and gRPC calls there hang or crash: such a process starts
// no client.
std::atomic<pid_t> g_grpc_owner{0};

bool GrpcInheritedFromParent() noexcept {
  pid_t owner = g_grpc_owner.load();
  return owner != 0 && owner != getpid();
}

constexpr const char* kForkedAfterGrpc =
    "this process was forked after its parent started gRPC, which cannot be used here; "
    "build routers with a Topology Service in the worker, or do not use them in the parent "
    "before it forks";
}  // namespace

Result<std::shared_ptr<TopologyServiceClient>> TopologyServiceClient::Start(
    TopologyServiceOptions options, std::shared_ptr<RouteTable> table,
    std::optional<Topology> static_topology) {
  if (options.address.empty()) return Status::Invalid("topology service: address is required");
  if (GrpcInheritedFromParent())
    return Status::Unavailable(std::string("topology service: ") + kForkedAfterGrpc);
  pid_t none = 0;
  g_grpc_owner.compare_exchange_strong(none, getpid());
  if (!table) return Status::Invalid("topology service: a route table is required");
  if (options.max_retries < 0 || options.fetch_threads < 1 || options.max_pending < 1 ||
      options.max_response_bytes < 1024) {
    return Status::Invalid(
        "topology service: max_retries >= 0, fetch_threads >= 1, max_pending >= 1 and "
        "max_response_bytes >= 1024");
  }
  for (auto d : {options.call_deadline, options.classify_deadline, options.poll_interval,
                 options.stop_deadline}) {
    if (d.count() <= 0) return Status::Invalid("topology service: deadlines must be positive");
  }

  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options.ca_file.empty()) {
    if (!options.cert_file.empty() || !options.key_file.empty()) {
      return Status::Invalid("topology service: a client certificate needs ca_file too");
    }
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    auto ca = internal::ReadFile(options.ca_file);
    if (!ca.ok()) return Status::Invalid("topology service: ca_file: " + ca.status().message());
    ssl.pem_root_certs = ca.value();
    if (!options.cert_file.empty() || !options.key_file.empty()) {
      auto cert = internal::ReadFile(options.cert_file);
      auto key = internal::ReadFile(options.key_file);
      if (!cert.ok() || !key.ok()) {
        return Status::Invalid("topology service: cert_file and key_file must both be readable: " +
                               (!cert.ok() ? cert.status().message() : key.status().message()));
      }
      ssl.pem_cert_chain = cert.value();
      ssl.pem_private_key = key.value();
    }
    creds = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  if (!options.server_name.empty()) args.SetSslTargetNameOverride(options.server_name);
  // Reconnect soon after the service comes back, not after gRPC's default two minutes.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(std::max<std::int64_t>(options.backoff_max.count(), 100)));
  args.SetMaxReceiveMessageSize(options.max_response_bytes);
  // A connection of its own, never one from gRPC's process-wide pool: a client rebuilt in a
  // forked child must not share the parent's socket.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);

  auto impl = std::make_shared<Impl>();
  impl->opt = std::move(options);
  impl->table = std::move(table);
  impl->channel = grpc::CreateCustomChannel(impl->opt.address, creds, args);
  impl->stub = ts::ClassifyService::NewStub(impl->channel);

  // Something to serve before the first answer: the snapshot, else the static topology.
  bool loaded = false;
  if (!impl->opt.snapshot_path.empty() && access(impl->opt.snapshot_path.c_str(), R_OK) == 0) {
    auto snap = Topology::LoadFile(impl->opt.snapshot_path);
    if (snap.ok()) {
      impl->table->SetTopology(std::move(snap).value());
      impl->source = "snapshot";
      impl->snapshot_synced_unix_ms = SnapshotSyncedUnixMs(impl->opt.snapshot_path);
      loaded = true;
    } else {
      impl->snapshot_error = "snapshot ignored: " + snap.status().message();
      impl->last_error = impl->snapshot_error;
      Event e;
      e.kind = Event::Kind::kSnapshotUnreadable;
      e.path = impl->opt.snapshot_path;
      e.message = impl->snapshot_error;
      impl->Emit(std::move(e));
    }
  }
  if (!loaded && static_topology) {
    impl->table->SetTopology(std::move(*static_topology));
    impl->source = "static";
  }

  impl->Spawn(&Impl::PollLoop);
  for (int t = 0; t < impl->opt.fetch_threads; ++t) impl->Spawn(&Impl::FetchLoop);
  return std::shared_ptr<TopologyServiceClient>(new TopologyServiceClient(std::move(impl)));
}

TopologyServiceClient::TopologyServiceClient(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

TopologyServiceClient::~TopologyServiceClient() { impl_->Stop(); }

void TopologyServiceClient::Stop() { impl_->Stop(); }

const std::shared_ptr<RouteTable>& TopologyServiceClient::table() const noexcept {
  return impl_->table;
}

bool TopologyServiceClient::Fetch(ClassifyType type, std::string_view value,
                                  std::function<void()> done) {
  Impl& i = *impl_;
  bool full = false;
  {
    std::lock_guard<std::mutex> lock(i.mu);
    if (!i.stopping) {
      auto it = i.inflight.find(Impl::KeyView{static_cast<int>(type), value});
      bool room = it != i.inflight.end() || i.inflight.size() < i.opt.max_pending;
      if (done && i.waiting_callbacks >= i.opt.max_pending) room = false;
      if (room) {
        if (it == i.inflight.end()) {
          Impl::Key key{static_cast<int>(type), std::string(value)};
          it = i.inflight.emplace(key, std::vector<std::function<void()>>()).first;
          i.queue.push_back(std::move(key));
          i.queue_cv.notify_one();
        }
        if (done) {
          it->second.push_back(std::move(done));
          ++i.waiting_callbacks;
        }
        return true;
      }
    }
    ++i.dropped;
    full = !i.stopping;
  }
  if (full) i.ReportDrop();
  if (done) done();
  return false;
}

bool TopologyServiceClient::FetchWait(ClassifyType type, std::string_view value,
                                      std::chrono::milliseconds deadline) {
  auto answered = [&] {
    RouteTable::Reader r(*impl_->table);
    return r.Lookup(type, value).kind != TableHit::Kind::kMiss;
  };
  if (answered()) return true;  // the fetch a Route started may have finished already
  struct Waiter {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
  };
  auto w = std::make_shared<Waiter>();
  Fetch(type, value, [w] {
    std::lock_guard<std::mutex> lock(w->mu);
    w->done = true;
    w->cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(w->mu);
  if (!w->cv.wait_for(lock, deadline, [&] { return w->done; })) return false;
  return answered();
}

Status TopologyServiceClient::SyncNow() { return impl_->Poll(); }

bool TopologyServiceClient::WaitUntilPolled(std::chrono::milliseconds deadline) {
  std::unique_lock<std::mutex> lock(impl_->mu);
  return impl_->events.wait_for(lock, deadline, [&] { return impl_->polled || impl_->stopping; });
}

void TopologyServiceClient::CountLookup(TableHit::Kind kind) noexcept {
  auto& c = impl_->MyCounters();
  switch (kind) {
    case TableHit::Kind::kPositive:
      c.hits.fetch_add(1, std::memory_order_relaxed);
      break;
    case TableHit::Kind::kNegative:
      c.negative_hits.fetch_add(1, std::memory_order_relaxed);
      break;
    case TableHit::Kind::kMiss:
      c.misses.fetch_add(1, std::memory_order_relaxed);
      break;
  }
}

void TopologyServiceClient::CountFallback() noexcept {
  impl_->MyCounters().fallbacks.fetch_add(1, std::memory_order_relaxed);
}

void TopologyServiceClient::AppendMetrics(std::string* out) const {
  const Impl& i = *impl_;
  TopologyServiceStatus s = status();
  internal::PromWriter w(out);
  static constexpr std::string_view kMethodNames[] = {"GetCells", "Classify"};
  w.Family("cellroute_topology_service_calls_total", "counter",
           "Calls to the Topology Service (every attempt), by method and the gRPC code it "
           "ended with.");
  for (std::size_t m = 0; m < Impl::kMethods; ++m) {
    for (std::size_t code = 0; code < Impl::kCodes; ++code) {
      std::uint64_t n = i.call_counters[m].by_code[code].load(std::memory_order_relaxed);
      if (n == 0) continue;
      w.Sample("cellroute_topology_service_calls_total",
               {{"method", kMethodNames[m]},
                {"code", CodeName(static_cast<grpc::StatusCode>(code))}},
               n);
    }
  }
  w.Family("cellroute_topology_service_call_duration_seconds", "histogram",
           "Time of each call to the Topology Service, by method.");
  for (std::size_t m = 0; m < Impl::kMethods; ++m) {
    const Impl::CallCounters& c = i.call_counters[m];
    std::uint64_t counts[Impl::kCallBounds.size() + 1];
    for (std::size_t b = 0; b < std::size(counts); ++b) {
      counts[b] = c.latency[b].load(std::memory_order_relaxed);
    }
    w.Histogram("cellroute_topology_service_call_duration_seconds", {{"method", kMethodNames[m]}},
                Impl::kCallBounds.data(), counts, Impl::kCallBounds.size(),
                static_cast<double>(c.latency_sum_us.load(std::memory_order_relaxed)) / 1e6);
  }
  w.Family("cellroute_cache_lookups_total", "counter",
           "Claims looked up in the route table on the routing path, by result (a miss is "
           "asked of the Topology Service).");
  w.Sample("cellroute_cache_lookups_total", {{"result", "hit"}}, s.cache_hits);
  w.Sample("cellroute_cache_lookups_total", {{"result", "negative_hit"}}, s.negative_hits);
  w.Sample("cellroute_cache_lookups_total", {{"result", "miss"}}, s.misses);
  w.Gauge("cellroute_fetches_pending", "Claims queued or being asked of the Topology Service.",
          static_cast<double>(s.pending_fetches));
  w.Counter("cellroute_fetches_dropped_total",
            "Claims not asked for because the queue was full or the client stopping (the "
            "request decided as unavailable).",
            s.dropped_fetches);
  w.Counter("cellroute_topology_answers_rejected_total",
            "GetCells answers refused as invalid; the last good topology was kept.",
            s.rejected_answers);
  w.Family("cellroute_topology_service_state", "gauge",
           "The client's state: 1 for the current one (starting, syncing, serving_stale, "
           "failed).");
  w.Sample("cellroute_topology_service_state", {{"state", StateName(s.state)}}, std::uint64_t{1});
  if (s.last_good_sync_age_ms >= 0) {
    double age = static_cast<double>(s.last_good_sync_age_ms) / 1000.0;
    double now = std::chrono::duration<double>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
    w.Gauge("cellroute_topology_last_sync_timestamp_seconds",
            "When the last good answer of GetCells arrived (Unix time).", now - age);
    w.Gauge("cellroute_topology_sync_age_seconds", "Seconds since the last good GetCells answer.",
            age);
  }
}

TopologyServiceStatus TopologyServiceClient::status() const {
  const Impl& i = *impl_;
  TopologyServiceStatus s;
  bool have_topology;
  {
    RouteTable::Reader r(*i.table);
    have_topology = r.topology() != nullptr;
    s.table_version = r.version();
    if (have_topology) s.topology_hash = r.topology()->ContentHash();
  }
  std::lock_guard<std::mutex> lock(i.mu);
  s.topology_source = have_topology ? i.source : "";
  s.last_error = i.last_error;
  if (i.last_good_ms >= 0) {
    s.last_good_sync_age_ms = SteadyMs() - i.last_good_ms;
  } else if (i.snapshot_synced_unix_ms > 0) {  // serving the snapshot: its own age
    s.last_good_sync_age_ms = std::max<std::int64_t>(0, UnixMs() - i.snapshot_synced_unix_ms);
  }
  if (!have_topology) {
    s.state =
        i.polled ? TopologyServiceStatus::State::kFailed : TopologyServiceStatus::State::kStarting;
  } else if (i.last_poll_ok) {
    s.state = TopologyServiceStatus::State::kSyncing;
  } else {
    s.state = TopologyServiceStatus::State::kServingStale;
  }
  if (have_topology && i.opt.max_staleness.count() > 0 &&
      (s.last_good_sync_age_ms < 0 || s.last_good_sync_age_ms > i.opt.max_staleness.count()) &&
      i.polled && !i.last_poll_ok) {
    s.state = TopologyServiceStatus::State::kFailed;
  }
  s.calls = i.calls;
  s.errors = i.errors;
  s.retries = i.retries;
  for (const auto& c : i.lookup_counters) {
    s.cache_hits += c.hits.load(std::memory_order_relaxed);
    s.misses += c.misses.load(std::memory_order_relaxed);
    s.negative_hits += c.negative_hits.load(std::memory_order_relaxed);
    s.fallbacks += c.fallbacks.load(std::memory_order_relaxed);
  }
  s.rejected_answers = i.rejected;
  s.pending_fetches = i.inflight.size();
  s.dropped_fetches = i.dropped;
  if (!have_topology && i.polled) {
    s.last_error =
        "no topology known: " + (s.last_error.empty() ? "none served yet" : s.last_error);
    if (!i.snapshot_error.empty() && s.last_error.find(i.snapshot_error) == std::string::npos) {
      s.last_error += "; " + i.snapshot_error;
    }
  }
  return s;
}

}  // namespace cellroute

namespace cellroute {

namespace {

// One source of a configuration: a file, the text itself, or (neither set) the embedded
// default. Set but empty text is refused: it is far more likely a bug than a wish for defaults.
template <typename T, typename FromText, typename FromFile>
Result<T> LoadSource(const std::string& path, const std::optional<std::string>& text,
                     std::string_view what, std::string_view default_text, FromText from_text,
                     FromFile from_file) {
  if (!path.empty()) return from_file(path);
  if (text) {
    if (text->empty()) {
      return Status::Invalid("<" + std::string(what) + ">: empty " + std::string(what) +
                             " text (leave it unset for the embedded default)");
    }
    return from_text(*text, "<" + std::string(what) + ">");
  }
  return from_text(default_text, "<default " + std::string(what) + ">");
}

Result<Ruleset> LoadRules(const RouterConfig& c) {
  return LoadSource<Ruleset>(
      c.rules_path, c.rules_text, "rules", defaults::RulesJson(),
      [](std::string_view text, const std::string& src) { return Ruleset::Parse(text, src); },
      [](const std::string& path) { return Ruleset::LoadFile(path); });
}

bool DefaultTopology(const RouterConfig& c) { return c.topology_path.empty() && !c.topology_text; }

Result<Topology> LoadTopology(const RouterConfig& c) {
  return LoadSource<Topology>(
      c.topology_path, c.topology_text, "topology", defaults::TopologyToml(),
      [](std::string_view text, const std::string& src) { return Topology::ParseToml(text, src); },
      [](const std::string& path) { return Topology::LoadFile(path); });
}

// The claims set in `c`, the default ones with the default topology, or none.
Result<Claims> LoadClaims(const RouterConfig& c, const Topology& topology) {
  if (c.claims_path.empty() && !c.claims_text && !DefaultTopology(c)) return Claims::Empty();
  return LoadSource<Claims>(
      c.claims_path, c.claims_text, "claims", defaults::ClaimsJson(),
      [&](std::string_view text, const std::string& src) {
        return Claims::Parse(text, src, topology);
      },
      [&](const std::string& path) { return Claims::LoadFile(path, topology); });
}

}  // namespace

Result<BuiltRouter> BuildRouter(const RouterConfig& c) {
  auto rules = LoadRules(c);
  if (!rules.ok()) return rules.status();
  auto topology = LoadTopology(c);
  if (!topology.ok()) return topology.status();
  std::shared_ptr<EventLog> events = c.service.events;
  if (!events && c.on_event) events = EventLog::Start(c.on_event);
  if (!c.service.address.empty()) {
    TopologyServiceOptions service = c.service;
    service.events = events;
    auto client = TopologyServiceClient::Start(
        std::move(service), std::make_shared<RouteTable>(c.table),
        DefaultTopology(c) ? std::nullopt : std::optional<Topology>(topology.value()));
    if (!client.ok()) return client.status();
    // Bounded by our own clock, not only by gRPC's: a call that ignores its deadline (as one
    // can in a child forked from a process using gRPC) never holds up the caller past it.
    if (c.wait_for_first_poll) {
      (void)client.value()->WaitUntilPolled(c.service.call_deadline +
                                            std::chrono::milliseconds(100));
    }
    auto router = Router::Create(std::move(rules).value(), MakeServiceResolver(client.value()));
    if (!router.ok()) return router.status();
    return BuiltRouter{std::move(router).value(), client.value(), {}, std::move(events)};
  }
  auto claims = LoadClaims(c, topology.value());
  if (!claims.ok()) return claims.status();
  auto router =
      Router::Create(std::move(rules).value(),
                     MakeStaticResolver(std::move(topology).value(), std::move(claims).value()));
  if (!router.ok()) return router.status();
  return BuiltRouter{std::move(router).value(), nullptr, {}, std::move(events)};
}

Status ReloadRouter(BuiltRouter* built, const RouterConfig& c) {
  // Everything is loaded and checked before anything changes, and every error is reported.
  std::vector<std::string> errors;
  StatusCode first = StatusCode::kInvalid;  // the code of the first error, as a build reports it
  auto fail = [&](const Status& s) {
    if (errors.empty()) first = s.code();
    errors.push_back(s.message());
  };
  auto rules = LoadRules(c);
  if (!rules.ok()) fail(rules.status());
  std::shared_ptr<const Resolver> resolver;
  std::string new_hash;  // of the cells a static router serves after the reload
  // With a Topology Service the cells and claims come from it, and in a child frozen at a fork
  // from the table as it was then (the configuration still names the service): either way only
  // the rules change, and a running client keeps running.
  const bool rules_only = built->client || !built->frozen_reason.empty();
  if (built->client && c.service.address.empty()) {
    fail(Status::Invalid(
        "reload: this router syncs with a Topology Service; a reload cannot remove it (build a "
        "new router)"));
  } else if (!rules_only && !c.service.address.empty()) {
    fail(Status::Invalid(
        "reload: this router has no Topology Service client; a reload cannot add one (build a "
        "new router)"));
  } else if (!rules_only) {
    auto topology = LoadTopology(c);
    if (!topology.ok()) {
      fail(topology.status());
    } else {
      auto claims = LoadClaims(c, topology.value());
      if (!claims.ok()) {
        fail(claims.status());
      } else {
        new_hash = topology->ContentHash();
        resolver = MakeStaticResolver(std::move(topology).value(), std::move(claims).value());
      }
    }
  }
  if (errors.empty()) {
    if (!resolver) resolver = built->router.resolver();
    Status st = built->router.Reload(std::move(rules).value(), std::move(resolver));
    if (st.ok()) {
      if (built->events) {
        Event e;
        e.kind = Event::Kind::kReloadSucceeded;
        e.new_hash = new_hash;
        e.message = rules_only ? "rules reloaded (cells and claims come from the Topology Service)"
                               : "rules, cells and claims reloaded";
        built->events->Emit(std::move(e));
      }
      return st;
    }
    fail(st);
  } else {
    built->router.CountFailedReload();
  }
  std::string message;
  for (const std::string& e : errors) message += (message.empty() ? "" : "\n") + e;
  if (built->events) {
    Event e;
    e.kind = Event::Kind::kReloadFailed;
    e.code = std::string(StatusCodeName(first));
    e.count = errors.size();
    e.message = message;
    built->events->Emit(std::move(e));
  }
  return Status(first, message);
}

Status RebuildAfterFork(BuiltRouter* built, const RouterConfig& config) {
  // The log's thread is gone and its lock may be held: leaked on purpose, as the client below.
  // A new one calls the same callback; a reload never changes it, so `config` may not have it.
  EventCallback on_event = built->events ? built->events->callback() : nullptr;
  if (built->events) {
    new std::shared_ptr<EventLog>(std::move(built->events));
    built->events = EventLog::Start(on_event);
  }
  if (!built->client) return Status::Ok();  // nothing but immutable values: it survived
  std::shared_ptr<RouteTable> table = built->client->table();
  // Leaked on purpose: destroying it would join threads that no longer exist and take locks
  // that a thread of the parent may have held at the fork.
  new std::shared_ptr<TopologyServiceClient>(std::move(built->client));
  if (!GrpcInheritedFromParent()) {  // gRPC never started: a fresh client is safe
    RouterConfig now = config;
    now.wait_for_first_poll = false;  // a worker's boot never stalls on the service
    now.on_event = nullptr;
    now.service.events = built->events;
    auto rebuilt = BuildRouter(now);
    if (!rebuilt.ok()) return rebuilt.status();
    *built = std::move(rebuilt).value();
    return Status::Ok();
  }
  // The table's memory came with the fork whole: readers only ever see published snapshots,
  // and no writer is left in this process to change it.
  auto router = Router::Create(built->router.rules(), MakeFrozenResolver(std::move(table)));
  if (!router.ok()) return router.status();
  built->router = std::move(router).value();
  built->frozen_reason =
      std::string("routing from the table as it was at fork(): ") + kForkedAfterGrpc;
  return Status::Ok();
}

std::string BuiltRouter::StatusJson() const {
  if (client) return client->status().ToJson();
  if (!frozen_reason.empty()) {
    return internal::DumpJson({{"state", "frozen"}, {"reason", frozen_reason}});
  }
  return "{\"state\":\"static\"}";
}

}  // namespace cellroute
