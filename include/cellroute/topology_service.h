// TopologyServiceClient: keeps a RouteTable in step with the Topology Service over gRPC, and
// keeps serving the last good topology when the service is down, slow or wrong.
//
//   auto table = std::make_shared<cellroute::RouteTable>();
//   cellroute::TopologyServiceOptions opt;
//   opt.address = "topology.internal:9095";
//   opt.snapshot_path = "/var/lib/cellroute/topology.toml";   // fail static across restarts
//   auto client = cellroute::TopologyServiceClient::Start(opt, table);
//   auto router = cellroute::Router::Create(rules, cellroute::MakeServiceResolver(*client));
//
//   router->Route(request);                       // never waits: a claim the table lacks is
//                                                 // fetched in the background (pending)
//   router->RouteWait(request, 50ms);             // waits up to 50 ms for such a fetch
//   router->RouteAsync(request, [](const cellroute::Decision& d) { ... });
//
// The client polls GetCells (with jitter), validates the whole answer and swaps it into the
// table; a rejected answer keeps the last good one and is reported in status(). Claims the
// table lacks are asked with Classify under a deadline; concurrent asks for one key make one
// call; NOT_FOUND becomes a negative entry; answers are cached with an expiry and refreshed in
// the background while in use. Calls that fail with UNAVAILABLE or DEADLINE_EXCEEDED are
// retried with exponential backoff and jitter. The last good cell list is written atomically
// to `snapshot_path` and read at start when the service cannot be reached.
//
// Thread-safe. The client runs its own threads (one poller, a few fetchers); Stop() or the
// destructor ends them: it cancels the calls in flight, runs every pending Fetch callback once
// (the caller then decides with what the table has) and returns within `stop_deadline` even
// when a call refuses to end (a thread stuck that long is left to finish on its own). The
// last reference may be dropped anywhere, one of the client's own threads included. Every
// call has a deadline; the queue of claims to fetch is bounded (`max_pending`): past it a
// claim is not asked for and the request decides at once (Fallback::kUnavailable).
// gRPC stays inside the library: no gRPC type appears here.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cellroute/events.h"
#include "cellroute/export.h"
#include "cellroute/router.h"
#include "cellroute/status.h"
#include "cellroute/table.h"
#include "cellroute/topology.h"

namespace cellroute {

struct TopologyServiceOptions {
  std::string address;  // host:port

  // mTLS when ca_file is set (cert_file and key_file then identify this client); plaintext
  // otherwise. server_name overrides the name checked against the server's certificate.
  std::string ca_file, cert_file, key_file, server_name;
  // Sent with every call, e.g. {"authorization", "Bearer ..."}.
  std::vector<std::pair<std::string, std::string>> metadata;

  std::chrono::milliseconds call_deadline{5000};     // GetCells
  std::chrono::milliseconds classify_deadline{500};  // one Classify attempt
  std::chrono::milliseconds poll_interval{10000};
  double poll_jitter = 0.2;  // +/- this fraction of the interval
  int max_retries = 3;       // after the first attempt
  std::chrono::milliseconds backoff_initial{50};
  std::chrono::milliseconds backoff_max{2000};

  std::chrono::milliseconds claim_ttl{std::chrono::hours(1)};
  std::chrono::milliseconds claim_refresh{std::chrono::minutes(10)};
  std::chrono::milliseconds negative_ttl{std::chrono::minutes(5)};

  std::string snapshot_path;  // empty: no snapshot
  // Past this age of the last good sync, status() reports kFailed. Zero: no limit. Routing
  // keeps using the last good topology either way: there is nothing better to use.
  std::chrono::milliseconds max_staleness{0};
  int fetch_threads = 2;

  // Claims waiting to be asked for, and callbacks waiting for their answers (each bounded on
  // its own). Past either bound the request is not queued: it decides at once, as unavailable,
  // and status() counts the drop.
  std::size_t max_pending = 10'000;
  // The largest GetCells or Classify answer accepted; a larger one fails the call.
  int max_response_bytes = 4 << 20;
  // How long Stop() (and so the destructor) waits for the client's threads.
  std::chrono::milliseconds stop_deadline{2000};
  // Where the client reports what it did (sync succeeded or failed, topology changed, answers
  // rejected, queue full, snapshot written or unreadable); null: nowhere. See events.h.
  std::shared_ptr<EventLog> events;
};

struct CELLROUTE_EXPORT TopologyServiceStatus {
  enum class State : std::uint8_t {
    kStarting,      // no answer yet and nothing to serve
    kSyncing,       // the last poll succeeded
    kServingStale,  // serving a topology older than the last poll (service down or wrong)
    kFailed,        // nothing to serve (no topology known), or stale past max_staleness
  };
  State state = State::kStarting;
  std::string topology_source;  // "topology_service", "snapshot", "static", ""
  std::string topology_hash;    // Topology::ContentHash() of the cells served; "" without
  // Since the last good GetCells answer; served from a snapshot before the first, the age the
  // snapshot records. -1: never (and no age known).
  std::uint64_t table_version = 0;
  std::int64_t last_good_sync_age_ms = -1;
  std::string last_error;
  std::uint64_t calls = 0, errors = 0, retries = 0;
  std::uint64_t cache_hits = 0, misses = 0, negative_hits = 0, fallbacks = 0;
  std::uint64_t rejected_answers = 0;
  std::uint64_t pending_fetches = 0;  // claims queued or being asked for now
  std::uint64_t dropped_fetches = 0;  // not queued: past max_pending, or stopping

  std::string ToJson() const;
};

CELLROUTE_EXPORT std::string_view StateName(TopologyServiceStatus::State s) noexcept;
// A gRPC status code's name ("OK", "NOT_FOUND", "UNAVAILABLE"...) by its number; "UNKNOWN"
// for a number that is none.
CELLROUTE_EXPORT std::string_view GrpcCodeName(int code) noexcept;

class CELLROUTE_EXPORT TopologyServiceClient {
 public:
  // Starts the client. Never fails because the service is down: it then serves the snapshot,
  // or `static_topology`, and keeps trying. Fails on bad options (unreadable certificates).
  static Result<std::shared_ptr<TopologyServiceClient>> Start(
      TopologyServiceOptions options, std::shared_ptr<RouteTable> table,
      std::optional<Topology> static_topology = std::nullopt);
  ~TopologyServiceClient();

  // Asks the service about a claim in the background (one call per key at a time); `done`,
  // if given, runs once: on a client thread when the answer is in the table or the call
  // failed, or at once (on the caller's thread) when the claim cannot be queued. Returns
  // whether it was queued (or already in flight); false past max_pending or once stopping.
  bool Fetch(ClassifyType type, std::string_view value, std::function<void()> done = nullptr);
  // The same, waiting up to `deadline`. True when an answer (positive or negative) arrived.
  bool FetchWait(ClassifyType type, std::string_view value, std::chrono::milliseconds deadline);
  // Polls GetCells once now. The poller does this on its own schedule.
  Status SyncNow();
  // Waits up to `deadline` for the poller's first poll to end (well or not); true when it has.
  bool WaitUntilPolled(std::chrono::milliseconds deadline);

  TopologyServiceStatus status() const;
  // Appends the client's metrics (Prometheus text format) to `out`: calls by method and gRPC
  // code and their latency, cache lookups, pending and dropped fetches, rejected answers, the
  // state and the age of the last good sync.
  void AppendMetrics(std::string* out) const;
  const std::shared_ptr<RouteTable>& table() const noexcept;
  void Stop();

  // Counters the resolver feeds.
  void CountLookup(TableHit::Kind kind) noexcept;
  void CountFallback() noexcept;

  struct Impl;

 private:
  explicit TopologyServiceClient(std::shared_ptr<Impl> impl);
  // Shared with the client's threads, so that it outlives a thread that drops the last
  // reference to the client.
  std::shared_ptr<Impl> impl_;
};

// A resolver over the client's table that fetches what the table lacks: claims it has no entry
// for come back as pending (Fallback::kPending) while the client asks the service.
CELLROUTE_EXPORT std::shared_ptr<const Resolver> MakeServiceResolver(
    std::shared_ptr<TopologyServiceClient> client);

// How the client reads the Topology Service's answers, for tools and fuzzing: the serialized
// protobuf bytes of a GetCellsResponse become a Topology validated as a file's is; those of a
// ClassifyResponse become the id of the cell of `topology` it names (a PROXY action to a known
// cell's address). Anything else is an error saying why, and the client keeps what it had.
namespace wire {
CELLROUTE_EXPORT Result<Topology> ParseGetCellsResponse(std::string_view bytes,
                                                        std::string_view source);
CELLROUTE_EXPORT Result<std::int64_t> ParseClassifyResponse(std::string_view bytes,
                                                            const Topology& topology);
}  // namespace wire

// Everything a router is made from, as the CLI, the C API and the bindings take it. Each
// source is a file path or the text itself; with neither set, the embedded default (the
// default claims apply only with the default topology). Text that is set but empty is an
// error, never the default. With service.address set, cells and claims come from the Topology
// Service, and the topology given here serves until it answers.
struct RouterConfig {
  std::string rules_path, topology_path, claims_path;  // empty: not set
  std::optional<std::string> rules_text, topology_text, claims_text;
  TopologyServiceOptions service;
  TableOptions table;  // the route table a service fills (max_cached_entries...)
  // Wait (up to the call deadline) for the service's first answer before returning.
  bool wait_for_first_poll = true;
  // Receives the events of the router's sync and reloads (events.h), on a thread of its own.
  // Set at build; a reload keeps the callback the router was built with.
  EventCallback on_event;
};

struct BuiltRouter {
  Router router;
  std::shared_ptr<TopologyServiceClient> client;  // null without a service
  // Set when the router routes from a table frozen at a fork (see RebuildAfterFork): why.
  std::string frozen_reason;
  std::shared_ptr<EventLog> events;  // null without RouterConfig::on_event

  // The client's status() as JSON; {"state":"static"} without a service; {"state":"frozen",
  // "reason":...} for a frozen table.
  CELLROUTE_EXPORT std::string StatusJson() const;
};

// Loads and validates everything; with a service, starts the client and waits for its first
// poll up to the call deadline (a failure there is not an error: status() reports it and the
// router serves what it has). Empty text for the rules, topology or claims is an error: only
// a source left unset means the embedded default.
CELLROUTE_EXPORT Result<BuiltRouter> BuildRouter(const RouterConfig& config);

// Loads `config` as BuildRouter does and, if all of it is valid, swaps the new rules, cells
// and claims into `built`'s router at once (requests in flight finish with the old ones). On
// any error nothing changes: the status has the first error's code (a file that cannot be read
// is kUnavailable, as at build), lists every error (file:line:column as at load), and the
// router counts a failed reload. With a Topology Service (or a router frozen at a fork)
// only the rules change: the cells and claims keep coming from the service, whose client
// keeps running; a reload cannot add or remove the service. Either way the router's event log
// gets reload_succeeded or reload_failed (with every error).
CELLROUTE_EXPORT Status ReloadRouter(BuiltRouter* built, const RouterConfig& config);

// In a child after fork(): the parent's client did not survive (its threads are gone, its
// locks may be held), so it is abandoned, never destroyed. gRPC cannot be used safely in a
// child forked after its parent started it (calls hang or crash inside gRPC), so the child
// never touches it: the router goes on from the parent's route table as it was at the fork
// (cells and cached claims), frozen; claims it lacks decide as unavailable, and the status
// says why (docs/reliability.md). A router without a service is kept as it is. The event log
// (whose thread did not survive either) is abandoned too, and a new one calls the same
// callback. Build routers with a service after forking, or let the parent not use them
// before, to have a live sync in each worker.
CELLROUTE_EXPORT Status RebuildAfterFork(BuiltRouter* built, const RouterConfig& config);

}  // namespace cellroute
