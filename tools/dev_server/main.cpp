// cellroute-topology-server: a development Topology Service.
//
//   cellroute-topology-server --config examples/topology.toml --claims examples/claims.json
//   cellroute-topology-server --config ... --fault GetCells:error=UNAVAILABLE --fault Classify:delay=800
//
// Listens on 127.0.0.1:9095 by default (plaintext; --tls-cert/--tls-key for TLS, plus
// --tls-client-ca for mTLS), prints the address it listens on, and serves until SIGINT/SIGTERM.
// --fault makes it misbehave the way a real service can, to rehearse a runbook; --log-json
// prints every call it receives (and the fault applied) as JSON lines on stderr.
#include <cellroute/topology_service.h>
#include <cellroute/version.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "dev_server.h"

namespace {

constexpr int kExitUsage = 2;

constexpr const char* kFaultHelp =
    "Misbehave on METHOD (GetCells, Classify, ..., or * for every method): "
    "METHOD:delay=MS (answer late), METHOD:error=CODE (fail with a gRPC code by name, e.g. "
    "UNAVAILABLE), METHOD:drop (cancel the call), METHOD:invalid (answer with data that breaks "
    "the contract: duplicate cells, unknown addresses); add ,times=N to stop after N calls. "
    "Repeatable.";

bool ParseInt(std::string_view text, int* out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size() && *out >= 0;
}

// "METHOD:kind[=value][,times=N]" -> a fault on METHOD; false with a reason.
bool ParseFault(const std::string& spec, std::string* method, cellroute::devserver::Fault* fault,
                std::string* why) {
  std::size_t colon = spec.find(':');
  if (colon == std::string::npos || colon == 0) {
    *why = "expected METHOD:KIND, e.g. GetCells:error=UNAVAILABLE";
    return false;
  }
  *method = spec.substr(0, colon);
  std::string_view rest = std::string_view(spec).substr(colon + 1);
  while (!rest.empty()) {
    std::size_t comma = rest.find(',');
    std::string_view part = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    std::size_t eq = part.find('=');
    std::string_view key = part.substr(0, eq);
    std::string_view value = eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1);
    int n = 0;
    if (key == "delay" && ParseInt(value, &n)) {
      fault->delay = std::chrono::milliseconds(n);
    } else if (key == "times" && ParseInt(value, &n) && n > 0) {
      fault->times = n;
    } else if (key == "drop" && value.empty()) {
      fault->drop = true;
    } else if (key == "invalid" && value.empty()) {
      fault->invalid_data = true;
    } else if (key == "error") {
      int code = 1;
      while (code <= 16 && cellroute::GrpcCodeName(code) != value) ++code;
      if (code > 16) {
        *why = "error=" + std::string(value) + ": not a gRPC code name (UNAVAILABLE, NOT_FOUND, ...)";
        return false;
      }
      fault->error = static_cast<grpc::StatusCode>(code);
    } else {
      *why = "'" + std::string(part) + "': expected delay=MS, error=CODE, drop, invalid or times=N";
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cellroute-topology-server: a development Topology Service"};
  app.set_version_flag("--version", CR_VERSION_STRING);
  std::string listen = "127.0.0.1:9095", config, claims, cert, key, client_ca;
  std::vector<std::string> faults;
  int lease_ttl = 600;
  app.add_option("--listen", listen, "host:port (port 0 picks a free one)");
  app.add_option("--config", config, "The service's config.toml (cells)")->required();
  app.add_option("--claims", claims, "Claims JSON: claim type -> value -> cell id");
  app.add_option("--tls-cert", cert, "Server certificate (PEM)");
  app.add_option("--tls-key", key, "Server key (PEM)");
  app.add_option("--tls-client-ca", client_ca, "Require client certificates signed by this CA");
  app.add_option("--lease-ttl", lease_ttl, "Seconds before an uncommitted lease is rolled back");
  app.add_option("--fault", faults, kFaultHelp);
  bool log_json = false;
  app.add_flag("--log-json", log_json,
               "Print events to stderr as JSON lines: listening, every call received (with the "
               "fault applied to it), stopping");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;  // --help and --version exit 0
  }

  std::vector<std::pair<std::string, cellroute::devserver::Fault>> parsed;
  for (const std::string& spec : faults) {
    std::string method, why;
    cellroute::devserver::Fault fault;
    if (!ParseFault(spec, &method, &fault, &why)) {
      std::cerr << "cellroute-topology-server: --fault " << spec << ": " << why << "\n";
      return kExitUsage;
    }
    parsed.emplace_back(method, fault);
  }

  auto topology = cellroute::Topology::LoadFile(config);
  if (!topology.ok()) {
    std::cerr << topology.status().message() << "\n";
    return kExitUsage;
  }
  cellroute::devserver::Options opt{.listen = listen,
                                    .topology = topology.value(),
                                    .claims = std::nullopt,
                                    .cert_file = cert,
                                    .key_file = key,
                                    .client_ca_file = client_ca,
                                    .lease_ttl = std::chrono::seconds(lease_ttl),
                                    .log = nullptr};
  // One line per write: calls arrive on several threads.
  auto log = [](const std::string& line) {
    std::string l = line + "\n";
    std::fwrite(l.data(), 1, l.size(), stderr);
  };
  auto event = [&](const char* name, const nlohmann::ordered_json& fields) {
    log(cellroute::devserver::LogLine(name, fields));
  };
  if (log_json) opt.log = log;
  if (!claims.empty()) {
    auto c = cellroute::Claims::LoadFile(claims, topology.value());
    if (!c.ok()) {
      std::cerr << c.status().message() << "\n";
      return kExitUsage;
    }
    opt.claims = std::move(c).value();
  }
  auto server = cellroute::devserver::Server::Start(std::move(opt));
  if (!server.ok()) {
    std::cerr << server.status().message() << "\n";
    return kExitUsage;
  }
  for (const auto& [method, fault] : parsed) server.value()->SetFault(method, fault);
  std::string address =
      listen.substr(0, listen.rfind(':')) + ":" + std::to_string(server.value()->port());
  std::cout << "listening on " << address << std::endl;
  if (log_json) {
    event("listening", {{"address", address},
                        {"cells", topology.value().cells().size()},
                        {"topology_hash", topology.value().ContentHash()},
                        {"faults", faults}});
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  int sig = 0;
  sigwait(&set, &sig);
  if (log_json) event("stopping", {{"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"}});
  server.value()->Shutdown();
  return 0;
}
