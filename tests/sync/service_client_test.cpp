// The Topology Service client against the in-process dev server on loopback: the happy path,
// and every failure the service can show (down, killed and restarted, slow, wrong, refusing a
// certificate).
#include <cellroute/router.h>
#include <cellroute/table.h>
#include <cellroute/topology_service.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <set>
#include <thread>

#include "common/test_util.h"
#include "dev_server.h"

using cellroute::ClassifyType;
using cellroute::Fallback;
using cellroute::Request;
using cellroute::Router;
using cellroute::RouteTable;
using cellroute::Source;
using cellroute::TableHit;
using cellroute::TopologyServiceClient;
using cellroute::TopologyServiceOptions;
using cellroute::TopologyServiceStatus;
using namespace std::chrono_literals;
namespace dev = cellroute::devserver;
namespace fs = std::filesystem;

namespace {

cellroute::Topology ExampleTopology() {
  return cellroute::Topology::LoadFile(CELLROUTE_EXAMPLES_DIR "/topology.toml").value();
}

std::unique_ptr<dev::Server> StartServer(std::string listen = "127.0.0.1:0") {
  auto topo = ExampleTopology();
  auto claims = cellroute::Claims::LoadFile(CELLROUTE_EXAMPLES_DIR "/claims.json", topo).value();
  dev::Options opt{.listen = listen,
                   .topology = topo,
                   .claims = claims,
                   .cert_file = "",
                   .key_file = "",
                   .client_ca_file = "",
                   .lease_ttl = std::chrono::seconds(600),
                   .log = nullptr};
  auto s = dev::Server::Start(std::move(opt));
  INFO(s.status().message());
  REQUIRE(s.ok());
  return std::move(s).value();
}

TopologyServiceOptions Options(const std::string& address) {
  TopologyServiceOptions o;
  o.address = address;
  o.poll_interval = 1h;  // tests poll with SyncNow
  o.call_deadline = 1s;
  o.classify_deadline = 300ms;
  o.backoff_initial = 20ms;
  o.backoff_max = 200ms;
  return o;
}

std::shared_ptr<TopologyServiceClient> StartClient(
    TopologyServiceOptions o, std::optional<cellroute::Topology> fallback = {}) {
  auto c = TopologyServiceClient::Start(std::move(o), std::make_shared<RouteTable>(), fallback);
  INFO(c.status().message());
  REQUIRE(c.ok());
  // Let the poller's first poll (made at start) finish, so that it cannot meet the faults a
  // test injects next; later polls are an hour away.
  (void)c.value()->WaitUntilPolled(3s);
  return c.value();
}

Router RouterFor(const std::shared_ptr<TopologyServiceClient>& client) {
  auto rules = cellroute::Ruleset::Parse(cellroute::defaults::RulesJson(), "defaults").value();
  return Router::Create(rules, cellroute::MakeServiceResolver(client)).value();
}

Request Path(const std::string& target, const std::string& cookie = "") {
  Request r;
  r.SetTarget(target);
  if (!cookie.empty()) r.AddHeader("Cookie", cookie);
  return r;
}

// A loopback port bound but never listened on, for as long as the object lives: connecting
// is refused, and no other process (another test running alongside) can take the port, as it
// could one that was merely free a moment ago.
class RefusingAddress {
 public:
  RefusingAddress() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t n = sizeof a;
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &n) == 0);
    address_ = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  }
  ~RefusingAddress() { ::close(fd_); }
  RefusingAddress(const RefusingAddress&) = delete;
  RefusingAddress& operator=(const RefusingAddress&) = delete;
  const std::string& address() const { return address_; }

 private:
  int fd_ = -1;
  std::string address_;
};

std::string TempPath(const std::string& name) {
  auto dir = fs::temp_directory_path() / ("cellroute-test-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

}  // namespace

TEST_CASE("happy path: cells polled, claims fetched once, then answered from the table") {
  auto server = StartServer();
  auto client = StartClient(Options(server->address()));
  REQUIRE(client->SyncNow().ok());
  Router router = RouterFor(client);

  Request req = Path("/gitlab-org/gitlab");
  auto first = router.Route(req.view());
  CHECK(first.fallback() == Fallback::kPending);  // never waits
  CHECK(first.cell_id() == 1);                    // meanwhile: the legacy cell
  auto d = router.RouteWait(req.view(), 3s);
  CHECK(d.cell_id() == 2);
  CHECK(d.source() == Source::kTable);
  CHECK(d.fallback() == Fallback::kNone);
  for (int i = 0; i < 5; ++i) CHECK(router.Route(req.view()).cell_id() == 2);
  CHECK(server->Calls("Classify") == 1);

  // Local classifications never ask the service.
  CHECK(router.Route(Path("/help", "_gitlab_session=cell-3-x").view()).cell_id() == 3);
  CHECK(server->Calls("Classify") == 1);

  auto s = client->status();
  CHECK(s.state == TopologyServiceStatus::State::kSyncing);
  CHECK(s.topology_source == "topology_service");
  CHECK(s.cache_hits >= 5);
  CHECK(s.misses >= 1);
  CHECK(s.last_good_sync_age_ms >= 0);
  CHECK(s.ToJson().find("\"state\":\"syncing\"") != std::string::npos);
}

TEST_CASE("RouteAsync answers at once or when the fetch completes") {
  auto server = StartServer();
  auto client = StartClient(Options(server->address()));
  REQUIRE(client->SyncNow().ok());
  Router router = RouterFor(client);
  std::atomic<std::int64_t> cell{-1};
  {
    Request req = Path("/acme/widgets");
    router.RouteAsync(req.view(), [&](const cellroute::Decision& d) { cell = d.cell_id(); });
  }  // the request is gone before the answer arrives
  for (int i = 0; i < 300 && cell < 0; ++i) std::this_thread::sleep_for(10ms);
  CHECK(cell == 3);
  std::int64_t now = -1;
  Request again = Path("/acme/widgets");
  router.RouteAsync(again.view(), [&](const cellroute::Decision& d) { now = d.cell_id(); });
  CHECK(now == 3);  // in the table: answered inline
}

TEST_CASE("NOT_FOUND is cached as a negative entry and the rules below decide") {
  auto server = StartServer();
  auto client = StartClient(Options(server->address()));
  REQUIRE(client->SyncNow().ok());
  Router router = RouterFor(client);
  Request req = Path("/no-such-group/x", "_gitlab_session=cell-2-ab");
  auto d = router.RouteWait(req.view(), 3s);
  CHECK(d.rule_id() == "session_cookie");
  CHECK(d.cell_id() == 2);
  {
    RouteTable::Reader r(*client->table());
    CHECK(r.Lookup(ClassifyType::kClaimRoute, "no-such-group").kind == TableHit::Kind::kNegative);
  }
  for (int i = 0; i < 3; ++i) router.Route(req.view());
  CHECK(server->Calls("Classify") == 1);
  CHECK(client->status().negative_hits >= 3);
}

TEST_CASE("concurrent misses for one key make one call") {
  auto server = StartServer();
  dev::Fault slow;
  slow.delay = 150ms;  // under the 300 ms deadline: slow enough for every thread to join
  server->SetFault("Classify", slow);
  auto client = StartClient(Options(server->address()));
  REQUIRE(client->SyncNow().ok());
  std::vector<std::thread> threads;
  std::atomic<int> answered{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back(
        [&] { answered += client->FetchWait(ClassifyType::kClaimRoute, "gitlab-org", 5s); });
  }
  for (auto& t : threads) t.join();
  CHECK(answered == 8);
  CHECK(server->Calls("Classify") == 1);
}

TEST_CASE("a slow service: deadlines and bounded retries, then the fallback") {
  auto server = StartServer();
  auto client = StartClient(Options(server->address()));
  REQUIRE(client->SyncNow().ok());
  dev::Fault slow;
  slow.delay = 1500ms;
  server->SetFault("Classify", slow);
  Router router = RouterFor(client);
  auto t0 = std::chrono::steady_clock::now();
  Request req = Path("/gitlab-org/x");
  auto d = router.RouteWait(req.view(), 5s);
  auto took = std::chrono::steady_clock::now() - t0;
  // 1 + 3 retries of 300 ms each plus backoff: well under the 5 s the caller allowed.
  CHECK(took < 2500ms);
  CHECK(d.cell_id() == 1);
  CHECK(d.fallback() == Fallback::kUnavailable);
  auto s = client->status();
  CHECK(s.retries == 3);
  CHECK(s.last_error.find("DEADLINE_EXCEEDED") != std::string::npos);
  server->ClearFaults();
  // Nothing was cached: the next request asks again and gets the answer.
  CHECK(router.RouteWait(req.view(), 3s).cell_id() == 2);
}

TEST_CASE("every gRPC code is named, never shown as a number") {
  auto server = StartServer();
  auto client = StartClient(Options(server->address()));
  for (auto [code, name] : {std::pair{grpc::StatusCode::UNIMPLEMENTED, "UNIMPLEMENTED"},
                            std::pair{grpc::StatusCode::RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"},
                            std::pair{grpc::StatusCode::ABORTED, "ABORTED"},
                            std::pair{grpc::StatusCode::DATA_LOSS, "DATA_LOSS"}}) {
    dev::Fault f;
    f.error = code;
    server->SetFault("GetCells", f);
    CHECK_FALSE(client->SyncNow().ok());
    CHECK_THAT(client->status().last_error, Catch::Contains(std::string("GetCells: ") + name));
    server->ClearFaults();
  }
}

TEST_CASE("only UNAVAILABLE and DEADLINE_EXCEEDED are retried") {
  auto server = StartServer();
  auto client = StartClient(Options(server->address()));
  REQUIRE(client->SyncNow().ok());
  dev::Fault broken;
  broken.error = grpc::StatusCode::INTERNAL;
  server->SetFault("Classify", broken);
  CHECK_FALSE(client->FetchWait(ClassifyType::kClaimRoute, "gitlab-org", 3s));
  CHECK(server->Calls("Classify") == 1);
  dev::Fault dropped;
  dropped.drop = true;
  dropped.times = 1;
  server->SetFault("Classify", dropped);
  CHECK_FALSE(client->FetchWait(ClassifyType::kClaimRoute, "gitlab-org", 3s));
  CHECK(server->Calls("Classify") == 2);  // a dropped call is CANCELLED: not retried
  CHECK(client->status().last_error.find("CANCELLED") != std::string::npos);
  dev::Fault unavailable;
  unavailable.error = grpc::StatusCode::UNAVAILABLE;
  unavailable.times = 2;
  server->SetFault("Classify", unavailable);
  CHECK(client->FetchWait(ClassifyType::kClaimRoute, "gitlab-org", 3s));
  CHECK(server->Calls("Classify") == 5);  // 2 + (2 unavailable + 1 answered)
}

TEST_CASE("bad data is rejected and the last good topology kept") {
  auto server = StartServer();
  auto client = StartClient(Options(server->address()));
  REQUIRE(client->SyncNow().ok());
  auto version = client->status().table_version;
  dev::Fault lie;
  lie.invalid_data = true;
  server->SetFault("GetCells", lie);
  auto st = client->SyncNow();
  REQUIRE_FALSE(st.ok());
  CHECK(st.message().find("rejected a GetCells answer") != std::string::npos);
  CHECK(st.message().find("duplicate cell id") != std::string::npos);
  auto s = client->status();
  CHECK(s.state == TopologyServiceStatus::State::kServingStale);
  CHECK(s.rejected_answers == 1);
  CHECK(s.table_version == version);
  {
    RouteTable::Reader r(*client->table());
    CHECK(r.topology()->cells().size() == 3);
  }
  // A Classify answer naming no known cell is not believed either.
  server->SetFault("Classify", lie);
  CHECK_FALSE(client->FetchWait(ClassifyType::kClaimRoute, "gitlab-org", 3s));
  CHECK(client->status().rejected_answers == 2);
  server->ClearFaults();
  CHECK(client->SyncNow().ok());
  CHECK(client->status().state == TopologyServiceStatus::State::kSyncing);
}

TEST_CASE("cell list changes are picked up and a removed cell's answers are purged") {
  auto server = StartServer();
  auto client = StartClient(Options(server->address()));
  REQUIRE(client->SyncNow().ok());
  REQUIRE(client->FetchWait(ClassifyType::kClaimRoute, "acme", 3s));
  auto cells = ExampleTopology().cells();
  cells.push_back({4, "cell-4.gitlab.example.com:443", "cell-4", {}});
  cells.erase(cells.begin() + 2);  // cell 3 leaves
  server->SetCells(cells);
  REQUIRE(client->SyncNow().ok());
  RouteTable::Reader r(*client->table());
  CHECK(r.topology()->FindById(4) != nullptr);
  CHECK(r.topology()->FindById(3) == nullptr);
  CHECK(r.Lookup(ClassifyType::kClaimRoute, "acme").kind == TableHit::Kind::kMiss);
}

TEST_CASE("the service down at start: snapshot, else static topology, else nothing") {
  std::string snapshot = TempPath("snapshot.toml");
  std::remove(snapshot.c_str());
  {
    auto server = StartServer();
    auto o = Options(server->address());
    o.snapshot_path = snapshot;
    auto client = StartClient(o);
    REQUIRE(client->SyncNow().ok());
  }
  REQUIRE(fs::exists(snapshot));
  RefusingAddress refusing;
  const std::string& nowhere = refusing.address();

  auto o = Options(nowhere);
  o.snapshot_path = snapshot;
  o.max_retries = 0;
  auto client = StartClient(o);
  CHECK_FALSE(client->SyncNow().ok());
  auto s = client->status();
  CHECK(s.topology_source == "snapshot");
  CHECK(s.state == TopologyServiceStatus::State::kServingStale);
  Router router = RouterFor(client);
  auto d = router.Route(Path("/help", "_gitlab_session=cell-2-a").view());
  CHECK(d.cell_id() == 2);
  // A claim cannot be asked: after the wait, the legacy cell, and the decision says why.
  d = router.RouteWait(Path("/gitlab-org/x").view(), 2s);
  CHECK(d.cell_id() == 1);
  CHECK(d.fallback() == Fallback::kUnavailable);

  auto no_snapshot = Options(nowhere);
  no_snapshot.max_retries = 0;
  auto with_static = StartClient(no_snapshot, ExampleTopology());
  CHECK_FALSE(with_static->SyncNow().ok());
  CHECK(with_static->status().topology_source == "static");
  CHECK(RouterFor(with_static).Route(Path("/users/sign_in").view()).cell_id() == 1);

  auto nothing = StartClient(no_snapshot);
  CHECK_FALSE(nothing->SyncNow().ok());
  CHECK(nothing->status().state == TopologyServiceStatus::State::kFailed);
  CHECK_THAT(nothing->status().last_error, Catch::Contains("no topology known"));
  CHECK_THAT(nothing->status().last_error,
             !Catch::Contains("keeping the last good topology"));  // there is none to keep
  auto none = RouterFor(nothing).Route(Path("/users/sign_in").view());
  CHECK(none.cell_id() == 0);
  CHECK(none.address().empty());
  CHECK(none.fallback() == Fallback::kNoTopology);  // a state of its own, not a silent match
  CHECK_THAT(none.ToJson(), Catch::Contains("\"fallback\":\"no_topology\""));

  // A corrupt snapshot is ignored with a reason, never half-loaded.
  std::FILE* f = std::fopen(snapshot.c_str(), "w");
  std::fputs("[[cells]]\nid = \n", f);
  std::fclose(f);
  auto corrupt = Options(nowhere);
  corrupt.snapshot_path = snapshot;
  corrupt.max_retries = 0;
  auto c2 = StartClient(corrupt);
  CHECK(c2->status().last_error.find("snapshot ignored") != std::string::npos);
}

TEST_CASE("killed mid-run and restarted: routing continues, then converges") {
  auto server = StartServer();
  std::string address = server->address();
  auto o = Options(address);
  o.max_retries = 0;
  auto client = StartClient(o);
  REQUIRE(client->SyncNow().ok());
  Router router = RouterFor(client);
  REQUIRE(router.RouteWait(Path("/gitlab-org/x").view(), 3s).cell_id() == 2);

  server->Shutdown();
  server.reset();
  CHECK_FALSE(client->SyncNow().ok());
  CHECK(client->status().state == TopologyServiceStatus::State::kServingStale);
  CHECK(router.Route(Path("/gitlab-org/x").view()).cell_id() == 2);  // cached answer
  CHECK(router.Route(Path("/dashboard", "_gitlab_session=cell-3-x").view()).cell_id() == 3);

  // Back, with a new cell.
  server = StartServer(address);
  auto cells = ExampleTopology().cells();
  cells.push_back({5, "cell-5.gitlab.example.com:443", "cell-5", {}});
  server->SetCells(cells);
  bool converged = false;
  for (int i = 0; i < 50 && !converged; ++i) {
    converged = client->SyncNow().ok();
    if (!converged) std::this_thread::sleep_for(100ms);
  }
  REQUIRE(converged);
  CHECK(router.Route(Path("/dashboard", "_gitlab_session=cell-5-x").view()).cell_id() == 5);
  CHECK(client->status().state == TopologyServiceStatus::State::kSyncing);
}

TEST_CASE("churn: concurrent routing never loses a decision or invents a cell") {
  auto server = StartServer();
  auto o = Options(server->address());
  o.claim_ttl = 200ms;  // answers expire and are asked again while the owners move
  o.claim_refresh = 100ms;
  o.poll_interval = 50ms;
  auto client = StartClient(o);
  REQUIRE(client->SyncNow().ok());
  Router router = RouterFor(client);
  std::set<std::int64_t> ever = {1, 2, 3, 6};
  std::atomic<bool> stop{false};
  std::atomic<long> decisions{0}, bad{0};
  auto reader = [&] {
    const char* groups[] = {"/gitlab-org/x", "/acme/y", "/gitlab-com/z", "/nobody/w"};
    for (int i = 0; !stop; ++i) {
      auto d = router.RouteWait(Path(groups[i % 4]).view(), 500ms);
      ++decisions;
      if (!ever.count(d.cell_id())) ++bad;
    }
  };
  std::thread r1(reader), r2(reader);
  auto cells = ExampleTopology().cells();
  for (int round = 0; round < 20; ++round) {
    server->SetClaim(ClassifyType::kClaimRoute, "gitlab-org", 1 + round % 3);
    if (round % 5 == 0) {
      auto more = cells;
      if (round % 10 == 0) more.push_back({6, "cell-6.gitlab.example.com:443", "cell-6", {}});
      server->SetCells(more);
    }
    std::this_thread::sleep_for(40ms);
  }
  stop = true;
  r1.join();
  r2.join();
  CHECK(decisions > 20);
  CHECK(bad == 0);
}

TEST_CASE("mTLS: the right client certificate is accepted, a wrong one refused") {
  std::string dir = TempPath("tls");
  fs::create_directories(dir);
  std::string script =
      "set -e; cd '" + dir +
      "'\n"
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key "
      "-out ca.pem 2>/dev/null\n"
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=rogue-ca -keyout rogue.key "
      "-out rogue.pem 2>/dev/null\n"
      "printf 'subjectAltName=DNS:topology.test,IP:127.0.0.1\\n' > san.ext\n"
      "openssl req -newkey rsa:2048 -nodes -subj /CN=topology.test -keyout server.key "
      "-out server.csr 2>/dev/null\n"
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
      "-extfile san.ext -out server.pem 2>/dev/null\n"
      "for who in client:ca intruder:rogue; do n=${who%%:*}; c=${who##*:};"
      " openssl req -newkey rsa:2048 -nodes -subj /CN=$n -keyout $n.key -out $n.csr 2>/dev/null;"
      " openssl x509 -req -in $n.csr -CA $c.pem -CAkey $c.key -CAcreateserial -days 2 "
      "-out $n.pem 2>/dev/null; done\n";
  REQUIRE(std::system(
              ("bash -c \"" + std::string() + "$(cat <<'EOS'\n" + script + "EOS\n)\"").c_str()) ==
          0);
  auto topo = ExampleTopology();
  dev::Options sopt{"127.0.0.1:0",
                    topo,
                    std::nullopt,
                    dir + "/server.pem",
                    dir + "/server.key",
                    dir + "/ca.pem",
                    std::chrono::seconds(600),
                    nullptr};
  auto server = dev::Server::Start(sopt);
  REQUIRE(server.ok());

  auto good = Options(server.value()->address());
  good.ca_file = dir + "/ca.pem";
  good.cert_file = dir + "/client.pem";
  good.key_file = dir + "/client.key";
  good.server_name = "topology.test";
  good.max_retries = 0;
  auto ok_client = StartClient(good);
  auto st = ok_client->SyncNow();
  INFO(st.message());
  CHECK(st.ok());

  auto bad = good;
  bad.cert_file = dir + "/intruder.pem";
  bad.key_file = dir + "/intruder.key";
  auto bad_client = StartClient(bad);
  CHECK_FALSE(bad_client->SyncNow().ok());
  CHECK(bad_client->status().state == TopologyServiceStatus::State::kFailed);

  auto plaintext = Options(server.value()->address());
  plaintext.max_retries = 0;
  CHECK_FALSE(StartClient(plaintext)->SyncNow().ok());

  auto unreadable = good;
  unreadable.ca_file = dir + "/missing.pem";
  CHECK_FALSE(TopologyServiceClient::Start(unreadable, std::make_shared<RouteTable>()).ok());
}

TEST_CASE("configured metadata goes with every call, and staleness past the limit is reported") {
  auto server = StartServer();
  auto o = Options(server->address());
  o.metadata = {{"X-Cellroute-Test", "sync-client"}, {"authorization", "Bearer t0ken"}};
  o.max_staleness = 1500ms;
  o.max_retries = 0;
  auto client = StartClient(o);
  REQUIRE(client->SyncNow().ok());
  CHECK(server->LastMetadata("x-cellroute-test") == "sync-client");
  CHECK(server->LastMetadata("authorization") == "Bearer t0ken");
  REQUIRE(client->FetchWait(ClassifyType::kClaimRoute, "acme", 3s));
  CHECK(server->Calls("Classify") == 1);
  CHECK(server->LastMetadata("authorization") == "Bearer t0ken");

  server->Shutdown();
  CHECK_FALSE(client->SyncNow().ok());
  CHECK(client->status().state == TopologyServiceStatus::State::kServingStale);
  std::this_thread::sleep_for(1600ms);
  auto s = client->status();
  CHECK(s.state == TopologyServiceStatus::State::kFailed);
  CHECK(s.last_good_sync_age_ms >= 1500);
  // Routing still uses the last good topology: there is nothing better.
  auto d = RouterFor(client).Route(Path("/help", "_gitlab_session=cell-3-a").view());
  CHECK(d.cell_id() == 3);
}

TEST_CASE("a cell owning 50k cached claims leaves the cell list while readers route") {
  // Before: the poller applied the purge while holding a Reader and waited for itself: the
  // table version froze and every later claim waited out its deadline.
  auto server = StartServer();
  auto o = Options(server->address());
  o.max_pending = 256;  // the readers' misses after the purge queue no more than this
  auto client = StartClient(o);
  REQUIRE(client->SyncNow().ok());
  Router router = RouterFor(client);
  constexpr int kClaims = 50'000;
  RouteTable::Batch fill;
  for (int i = 0; i < kClaims; ++i) {
    fill.Put(ClassifyType::kClaimRoute, "group-" + std::to_string(i), 3, 1h, 1h);
  }
  client->table()->Apply(std::move(fill));
  CHECK(router.Route(Path("/group-42/x").view()).cell_id() == 3);

  std::atomic<bool> stop{false};
  std::atomic<long> routed{0}, nowhere{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] {
      for (long n = t; !stop; n += 2) {
        auto d = router.Route(Path("/group-" + std::to_string(n % kClaims) + "/x").view());
        if (d.address().empty()) ++nowhere;
        ++routed;
      }
    });
  }
  std::uint64_t before = client->status().table_version;
  auto cells = ExampleTopology().cells();
  cells.erase(std::remove_if(cells.begin(), cells.end(), [](const auto& c) { return c.id == 3; }),
              cells.end());
  server->SetCells(cells);
  REQUIRE(client->SyncNow().ok());
  stop = true;
  for (auto& t : readers) t.join();

  auto s = client->status();
  CHECK(s.state == TopologyServiceStatus::State::kSyncing);
  CHECK(s.table_version > before);
  CHECK(routed > 0);
  CHECK(nowhere == 0);
  auto stats = client->table()->stats();
  CHECK(stats.entries - stats.negative_entries < 100);  // cell 3's claims are gone
  // The client still works: once the readers' misses are answered, a new claim is fetched and
  // answered in time.
  for (int i = 0; i < 1000 && client->status().pending_fetches > 0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  auto d = router.RouteWait(Path("/gitlab-org/x").view(), 2s);
  CHECK(d.cell_id() == 2);
  CHECK(d.source() == Source::kTable);
}

TEST_CASE("async routing, then the client and router dropped: every callback once, no abort") {
  // Before: the last reference to the client was dropped on one of its own fetcher threads,
  // whose destructor destroyed joinable threads: std::terminate.
  auto server = StartServer();
  dev::Fault slow;
  slow.delay = 200ms;
  server->SetFault("Classify", slow);
  std::atomic<int> calls{0}, still_pending{0};
  constexpr int kRequests = 20;
  {
    auto client = StartClient(Options(server->address()));
    Router router = RouterFor(client);
    for (int i = 0; i < kRequests; ++i) {
      router.RouteAsync(Path("/unknown-" + std::to_string(i) + "/x").view(),
                        [&](const cellroute::Decision& d) {
                          if (d.fallback() == Fallback::kPending) ++still_pending;
                          ++calls;
                        });
    }
  }  // the callbacks' Router copies now hold the last references
  for (int i = 0; i < 2000 && calls < kRequests; ++i) std::this_thread::sleep_for(10ms);
  std::this_thread::sleep_for(300ms);  // time for any second call to show
  CHECK(calls == kRequests);
  CHECK(still_pending == 0);
}

TEST_CASE("Stop runs pending callbacks once before it returns, and cancels calls in flight") {
  auto server = StartServer();
  dev::Fault hang;
  hang.delay = 3s;  // past the check below: only cancellation ends these calls in time
  server->SetFault("Classify", hang);
  auto o = Options(server->address());
  o.classify_deadline = 20s;
  o.stop_deadline = 20s;  // so only cancellation, not this deadline, can end Stop early
  auto client = StartClient(o);
  Router router = RouterFor(client);
  std::atomic<int> calls{0};
  for (int i = 0; i < 5; ++i) {
    router.RouteAsync(Path("/waiting-" + std::to_string(i) + "/x").view(),
                      [&](const cellroute::Decision& d) {
                        CHECK(d.fallback() == Fallback::kUnavailable);
                        ++calls;
                      });
  }
  std::this_thread::sleep_for(100ms);  // the fetchers are inside their calls now
  client->Stop();
  // The calls in flight ended as cancelled: without cancellation they would have waited for
  // the service's answer and succeeded.
  CHECK_THAT(client->status().last_error, Catch::Contains("CANCELLED"));
  CHECK(calls == 5);
  std::this_thread::sleep_for(100ms);
  CHECK(calls == 5);
  // A stopped client queues nothing and answers at once.
  CHECK(router.Route(Path("/after-stop/x").view()).fallback() == Fallback::kUnavailable);
}

TEST_CASE("the fetch queue is bounded: past it, requests decide at once and drops are counted") {
  auto server = StartServer();
  dev::Fault slow;
  slow.delay = 1s;
  server->SetFault("Classify", slow);
  auto o = Options(server->address());
  o.fetch_threads = 1;
  o.classify_deadline = 2s;
  o.max_pending = 50;
  auto client = StartClient(o);
  Router router = RouterFor(client);
  int pending = 0, unavailable = 0;
  for (int i = 0; i < 1000; ++i) {
    auto d = router.Route(Path("/distinct-" + std::to_string(i) + "/x").view());
    if (d.fallback() == Fallback::kPending) ++pending;
    if (d.fallback() == Fallback::kUnavailable) ++unavailable;
  }
  CHECK(pending <= 50);
  CHECK(unavailable >= 950);
  auto s = client->status();
  CHECK(s.pending_fetches <= 50);
  CHECK(s.dropped_fetches >= 950);
  // Callbacks are bounded too: past the bound, RouteAsync decides at once.
  std::atomic<int> now{0};
  router.RouteAsync(Path("/distinct-999999/x").view(), [&](const cellroute::Decision& d) {
    CHECK(d.fallback() == Fallback::kUnavailable);
    ++now;
  });
  CHECK(now == 1);
}

// ---- events ---------------------------------------------------------------------------------

namespace {
using cellroute::Event;
using cellroute::testing::EventRecorder;

std::vector<Event::Kind> Kinds(const std::vector<Event>& events) {
  std::vector<Event::Kind> kinds;
  for (const Event& e : events) kinds.push_back(e.kind);
  return kinds;
}
}  // namespace

TEST_CASE("events: a good sync, a topology change and the snapshot written, in that order") {
  std::string snapshot = TempPath("events-snapshot.toml");
  std::remove(snapshot.c_str());
  auto server = StartServer();
  EventRecorder got;
  auto o = Options(server->address());
  o.snapshot_path = snapshot;
  o.events = cellroute::EventLog::Start(got.Callback());
  auto client = StartClient(o);
  REQUIRE(got.WaitFor(3));
  auto events = got.Snapshot();
  REQUIRE(Kinds(events) == std::vector<Event::Kind>{Event::Kind::kSyncSucceeded,
                                                    Event::Kind::kTopologyChanged,
                                                    Event::Kind::kSnapshotWritten});
  const std::string hash = ExampleTopology().ContentHash();
  CHECK(events[0].code == "OK");
  CHECK(events[0].count == 3);  // cells
  CHECK(events[0].new_hash == hash);
  CHECK(events[1].old_hash.empty());  // nothing served before
  CHECK(events[1].new_hash == hash);
  CHECK(events[2].path == snapshot);
  for (std::thread::id t : got.threads) CHECK(t != std::this_thread::get_id());

  // The same cells again: a sync, but no change and no snapshot written.
  REQUIRE(client->SyncNow().ok());
  REQUIRE(got.WaitFor(4));
  CHECK(got.Snapshot().back().kind == Event::Kind::kSyncSucceeded);
  auto cells = ExampleTopology().cells();
  cells.pop_back();
  server->SetCells(cells);
  REQUIRE(client->SyncNow().ok());
  REQUIRE(got.WaitFor(7));
  events = got.Snapshot();
  CHECK(events[5].kind == Event::Kind::kTopologyChanged);
  CHECK(events[5].old_hash == hash);
  CHECK(events[5].new_hash != hash);
  CHECK(events[5].new_hash == client->status().topology_hash);
}

TEST_CASE("events: a failed sync names its gRPC code; a lie is an answer rejected") {
  auto server = StartServer();
  EventRecorder got;
  auto o = Options(server->address());
  o.max_retries = 0;
  o.events = cellroute::EventLog::Start(got.Callback());
  auto client = StartClient(o);
  dev::Fault down;
  down.error = grpc::StatusCode::UNAVAILABLE;
  server->SetFault("GetCells", down);
  CHECK_FALSE(client->SyncNow().ok());
  auto failed = got.WaitForKind(Event::Kind::kSyncFailed);
  REQUIRE(failed);
  CHECK(failed->code == "UNAVAILABLE");
  CHECK(failed->method == "GetCells");
  CHECK_THAT(failed->message, Catch::Contains("keeping the last good topology"));

  dev::Fault lie;
  lie.invalid_data = true;
  server->SetFault("GetCells", lie);
  server->SetFault("Classify", lie);
  CHECK_FALSE(client->SyncNow().ok());
  CHECK_FALSE(client->FetchWait(ClassifyType::kClaimRoute, "gitlab-org", 3s));
  REQUIRE(got.WaitFor(5));  // sync, topology, sync_failed, two rejections
  std::vector<std::string> methods;
  for (const Event& e : got.Snapshot()) {
    if (e.kind == Event::Kind::kAnswerRejected) methods.push_back(e.method);
  }
  CHECK(methods == std::vector<std::string>{"GetCells", "Classify"});
}

TEST_CASE("events: an unreadable snapshot at start, and a full fetch queue, once a second") {
  std::string snapshot = TempPath("events-corrupt.toml");
  std::FILE* f = std::fopen(snapshot.c_str(), "w");
  std::fputs("[[cells]]\nid = \n", f);
  std::fclose(f);
  RefusingAddress refusing;
  EventRecorder got;
  auto o = Options(refusing.address());
  o.snapshot_path = snapshot;
  o.max_retries = 0;
  o.max_pending = 1;
  o.events = cellroute::EventLog::Start(got.Callback());
  auto client = StartClient(o, ExampleTopology());
  auto unreadable = got.WaitForKind(Event::Kind::kSnapshotUnreadable);
  REQUIRE(unreadable);
  CHECK(unreadable->path == snapshot);
  CHECK_THAT(unreadable->message, Catch::Contains("snapshot ignored"));

  // Past max_pending every request drops its fetch; one event reports them, not one each.
  Router router = RouterFor(client);
  for (int i = 0; i < 200; ++i) (void)router.Route(Path("/queue-" + std::to_string(i) + "/x").view());
  auto full = got.WaitForKind(Event::Kind::kQueueFull);
  REQUIRE(full);
  CHECK(full->count >= 1);
  std::this_thread::sleep_for(100ms);
  int queue_full_events = 0;
  for (const Event& e : got.Snapshot()) queue_full_events += e.kind == Event::Kind::kQueueFull;
  CHECK(queue_full_events == 1);
}

TEST_CASE("events: reloads succeed or fail with every error, and a router built with "
          "on_event closes its log last") {
  EventRecorder got;
  cellroute::RouterConfig config;
  config.on_event = got.Callback();
  auto built = cellroute::BuildRouter(config);
  REQUIRE(built.ok());
  REQUIRE(built.value().events);
  REQUIRE(cellroute::ReloadRouter(&built.value(), config).ok());
  auto ok = got.WaitForKind(Event::Kind::kReloadSucceeded);
  REQUIRE(ok);
  CHECK(ok->new_hash == ExampleTopology().ContentHash());

  cellroute::RouterConfig broken;
  broken.rules_text = "[";
  broken.topology_path = "/nonexistent/topology.toml";
  CHECK_FALSE(cellroute::ReloadRouter(&built.value(), broken).ok());
  auto failed = got.WaitForKind(Event::Kind::kReloadFailed);
  REQUIRE(failed);
  CHECK(failed->code == "invalid");
  CHECK(failed->count == 2);
  CHECK_THAT(failed->message, Catch::Contains("<rules>:1:2"));
  CHECK_THAT(failed->message, Catch::Contains("/nonexistent/topology.toml"));
}
