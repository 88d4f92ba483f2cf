// A development Topology Service: the role GitLab's service plays on a developer's laptop,
// serving ClassifyService, CellService, HealthService and ClaimService from a config.toml and
// a claims file, with leases kept in memory. Tests run it in-process on 127.0.0.1 port 0 and
// inject faults (delay, error status, dropped call, invalid data) per method.
#pragma once

#include <cellroute/topology.h>
#include <grpcpp/grpcpp.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cellroute::devserver {

struct Options {
  std::string listen = "127.0.0.1:0";
  Topology topology;
  std::optional<Claims> claims;
  // TLS when cert and key are set; with client_ca_file, clients must present a certificate
  // signed by it (mTLS).
  std::string cert_file, key_file, client_ca_file;
  std::chrono::seconds lease_ttl{600};  // older leases are rolled back
  // Given one JSON line (no newline) for every call received, with the fault applied to it.
  std::function<void(const std::string&)> log;
};

// One JSON log line as cellroute's events are written: time, event, then `fields` in order.
std::string LogLine(std::string_view event, const nlohmann::ordered_json& fields);

struct Fault {
  std::chrono::milliseconds delay{0};
  grpc::StatusCode error = grpc::StatusCode::OK;  // answer with this status instead
  bool drop = false;                              // cancel the call mid-flight
  bool invalid_data = false;                      // answer with data that breaks the contract
  int times = -1;                                 // how many calls it applies to; -1: until cleared
};

class Server {
 public:
  static Result<std::unique_ptr<Server>> Start(Options options);
  ~Server();

  int port() const noexcept { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  void Shutdown();

  // method: "GetCells", "Classify", "GetCell", ... or "*" for every method.
  void SetFault(const std::string& method, Fault fault);
  void ClearFaults();
  // Serves these cells as they are (no validation: tests use it to lie).
  void SetCells(std::vector<Cell> cells);
  void SetClaim(ClassifyType type, const std::string& value, std::int64_t cell_id);
  void RemoveClaim(ClassifyType type, const std::string& value);
  int Calls(const std::string& method) const;
  // The value of a metadata key on the last call that carried it ("" if none did).
  std::string LastMetadata(const std::string& key) const;

  struct State;

 private:
  Server() = default;
  std::shared_ptr<State> state_;
  std::vector<std::unique_ptr<grpc::Service>> services_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace cellroute::devserver
