// cellroute-topology-server: a development Topology Service.
//
//   cellroute-topology-server --config examples/topology.toml --claims examples/claims.json
//
// Listens on 127.0.0.1:9095 by default (plaintext; --tls-cert/--tls-key for TLS, plus
// --tls-client-ca for mTLS), prints the address it listens on, and serves until SIGINT/SIGTERM.
#include <CLI/CLI.hpp>
#include <csignal>
#include <iostream>

#include "dev_server.h"

int main(int argc, char** argv) {
  CLI::App app{"cellroute-topology-server: a development Topology Service"};
  std::string listen = "127.0.0.1:9095", config, claims, cert, key, client_ca;
  int lease_ttl = 600;
  app.add_option("--listen", listen, "host:port (port 0 picks a free one)");
  app.add_option("--config", config, "The service's config.toml (cells)")->required();
  app.add_option("--claims", claims, "Claims JSON: claim type -> value -> cell id");
  app.add_option("--tls-cert", cert, "Server certificate (PEM)");
  app.add_option("--tls-key", key, "Server key (PEM)");
  app.add_option("--tls-client-ca", client_ca, "Require client certificates signed by this CA");
  app.add_option("--lease-ttl", lease_ttl, "Seconds before an uncommitted lease is rolled back");
  CLI11_PARSE(app, argc, argv);

  auto topology = cellroute::Topology::LoadFile(config);
  if (!topology.ok()) {
    std::cerr << topology.status().message() << "\n";
    return 2;
  }
  cellroute::devserver::Options opt{listen,
                                    topology.value(),
                                    std::nullopt,
                                    cert,
                                    key,
                                    client_ca,
                                    std::chrono::seconds(lease_ttl)};
  if (!claims.empty()) {
    auto c = cellroute::Claims::LoadFile(claims, topology.value());
    if (!c.ok()) {
      std::cerr << c.status().message() << "\n";
      return 2;
    }
    opt.claims = std::move(c).value();
  }
  auto server = cellroute::devserver::Server::Start(std::move(opt));
  if (!server.ok()) {
    std::cerr << server.status().message() << "\n";
    return 2;
  }
  std::cout << "listening on " << listen.substr(0, listen.rfind(':')) << ":"
            << server.value()->port() << std::endl;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  int sig = 0;
  sigwait(&set, &sig);
  server.value()->Shutdown();
  return 0;
}
