#include "dev_server.h"

#include <cellroute/events.h>
#include <cellroute/topology_service.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "proto/cell_service.grpc.pb.h"
#include "proto/claims/v1/service.grpc.pb.h"
#include "proto/classify_service.grpc.pb.h"
#include "proto/health_service.grpc.pb.h"

namespace cellroute::devserver {

namespace ts = gitlab::cells::topology_service;
namespace cv1 = gitlab::cells::topology_service::claims::v1;
using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;

namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The claim oneof field numbers equal the Bucket.Type numbers (route = ROUTES = 1, ...).
std::pair<int, std::string> BucketOf(const ts::types::v1::Claim& c) {
  switch (c.claim_case()) {
    case ts::types::v1::Claim::kRoute:
      return {1, c.route()};
    case ts::types::v1::Claim::kOrganizationPath:
      return {2, c.organization_path()};
    case ts::types::v1::Claim::kRedirectRoute:
      return {3, c.redirect_route()};
    case ts::types::v1::Claim::kUsername:
      return {4, c.username()};
    case ts::types::v1::Claim::kEmail:
      return {5, c.email()};
    case ts::types::v1::Claim::kProjectId:
      return {6, std::to_string(c.project_id())};
    case ts::types::v1::Claim::kNamespaceId:
      return {7, std::to_string(c.namespace_id())};
    case ts::types::v1::Claim::kGpgKey:
      return {8, c.gpg_key()};
    case ts::types::v1::Claim::kSshKey:
      return {9, c.ssh_key()};
    case ts::types::v1::Claim::kUserId:
      return {10, std::to_string(c.user_id())};
    case ts::types::v1::Claim::kOrganizationId:
      return {11, std::to_string(c.organization_id())};
    case ts::types::v1::Claim::kServiceDeskCustomEmail:
      return {12, c.service_desk_custom_email()};
    default:
      return {0, ""};
  }
}

void Stamp(google::protobuf::Timestamp* t, std::chrono::system_clock::time_point when) {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(when.time_since_epoch()).count();
  t->set_seconds(ns / 1000000000);
  t->set_nanos(static_cast<int>(ns % 1000000000));
}

}  // namespace

std::string LogLine(std::string_view event, const nlohmann::ordered_json& fields) {
  nlohmann::ordered_json j;
  j["time"] = EventTime(std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count());
  j["event"] = std::string(event);
  for (const auto& [k, v] : fields.items()) j[k] = v;
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

struct Server::State {
  mutable std::mutex mu;
  std::vector<Cell> cells;
  std::map<std::string, Fault> faults;
  std::map<std::string, int> calls;
  std::map<std::string, std::string> metadata;
  std::chrono::seconds lease_ttl{600};
  std::function<void(const std::string&)> log;

  struct Rec {
    cv1::Record record;  // uuid, metadata, cell_id, status, lease_uuid, timestamps
  };
  std::map<std::pair<int, std::string>, Rec> records;
  struct Lease {
    std::int64_t cell_id;
    std::chrono::system_clock::time_point created;
    std::vector<std::pair<int, std::string>> creating, destroying;
  };
  std::map<std::string, Lease> leases;
  std::mt19937_64 rng{std::random_device{}()};

  std::string NewUuid() {
    char buf[40];
    std::uint64_t a = rng(), b = rng();
    std::snprintf(buf, sizeof buf, "%08x-%04x-4%03x-a%03x-%012llx", static_cast<unsigned>(a >> 32),
                  static_cast<unsigned>(a >> 16) & 0xffff, static_cast<unsigned>(a) & 0xfff,
                  static_cast<unsigned>(b >> 52) & 0xfff,
                  static_cast<unsigned long long>(b & 0xffffffffffffULL));
    return buf;
  }

  const Cell* FindCell(std::int64_t id) const {
    for (const Cell& c : cells) {
      if (c.id == id) return &c;
    }
    return nullptr;
  }

  void Fill(const Cell& c, ts::CellInfo* out) const {
    out->set_id(c.id);
    out->set_address(c.address);
    out->set_session_prefix(c.session_prefix);
    for (const auto& r : c.sequence_ranges) {
      auto* sr = out->add_sequence_ranges();
      sr->set_minval(r.minval);
      sr->set_maxval(r.maxval);
    }
  }

  // Leases older than lease_ttl are rolled back, as the real service does.
  void ExpireLeases() {
    auto now = std::chrono::system_clock::now();
    for (auto it = leases.begin(); it != leases.end();) {
      if (now - it->second.created > lease_ttl) {
        RollbackLocked(it->second);
        it = leases.erase(it);
      } else {
        ++it;
      }
    }
  }
  void RollbackLocked(const Lease& l) {
    for (const auto& k : l.creating) records.erase(k);
    for (const auto& k : l.destroying) {
      auto it = records.find(k);
      if (it != records.end()) {
        it->second.record.set_status(cv1::Record::ACTIVE);
        it->second.record.clear_lease_uuid();
      }
    }
  }

  // The metadata's keys, not its values: those may be credentials.
  void LogCall(const std::string& method, const ServerContext* ctx, const Fault* f) {
    nlohmann::ordered_json j;
    j["method"] = method;
    std::vector<std::string> keys;
    for (const auto& [k, v] : ctx->client_metadata()) keys.emplace_back(k.data(), k.size());
    std::sort(keys.begin(), keys.end());
    j["metadata_keys"] = keys;
    if (f != nullptr) {
      std::string fault;
      if (f->delay.count() > 0) fault = "delay=" + std::to_string(f->delay.count());
      auto add = [&](const std::string& part) { fault += (fault.empty() ? "" : ",") + part; };
      if (f->drop) add("drop");
      if (f->error != StatusCode::OK) add("error=" + std::string(GrpcCodeName(static_cast<int>(f->error))));
      if (f->invalid_data) add("invalid");
      j["fault"] = fault;
    }
    log(LogLine("call", j));
  }

  // Counts the call and applies an injected fault. Returns false with `status` set when the
  // fault answers the call; sets `invalid` when the handler must answer with bad data.
  bool Enter(const std::string& method, ServerContext* ctx, Status* status, bool* invalid) {
    Fault f;
    bool have = false;
    {
      std::lock_guard<std::mutex> lock(mu);
      ++calls[method];
      for (const auto& [k, v] : ctx->client_metadata()) {
        metadata[std::string(k.data(), k.size())] = std::string(v.data(), v.size());
      }
      for (const std::string& key : {method, std::string("*")}) {
        auto it = faults.find(key);
        if (it == faults.end()) continue;
        f = it->second;
        have = true;
        if (it->second.times > 0 && --it->second.times == 0) faults.erase(it);
        break;
      }
    }
    if (log) LogCall(method, ctx, have ? &f : nullptr);
    if (!have) return true;
    if (f.delay.count() > 0) std::this_thread::sleep_for(f.delay);
    if (f.drop) {
      ctx->TryCancel();
      *status = Status(StatusCode::CANCELLED, "dropped by fault injection");
      return false;
    }
    if (f.error != StatusCode::OK) {
      *status = Status(f.error, "injected fault");
      return false;
    }
    *invalid = f.invalid_data;
    return true;
  }
};

namespace {

class ClassifyServiceImpl final : public ts::ClassifyService::Service {
 public:
  explicit ClassifyServiceImpl(std::shared_ptr<Server::State> s) : s_(std::move(s)) {}

  Status GetCells(ServerContext* ctx, const ts::GetCellsRequest*,
                  ts::GetCellsResponse* resp) override {
    Status st;
    bool invalid = false;
    if (!s_->Enter("GetCells", ctx, &st, &invalid)) return st;
    std::lock_guard<std::mutex> lock(s_->mu);
    for (const Cell& c : s_->cells) s_->Fill(c, resp->add_cells());
    if (invalid && resp->cells_size() > 0) {
      // Two cells with one id, and one without an address.
      *resp->add_cells() = resp->cells(0);
      resp->mutable_cells(0)->set_address("");
    }
    return Status::OK;
  }

  Status Classify(ServerContext* ctx, const ts::ClassifyRequest* req,
                  ts::ClassifyResponse* resp) override {
    Status st;
    bool invalid = false;
    if (!s_->Enter("Classify", ctx, &st, &invalid)) return st;
    std::lock_guard<std::mutex> lock(s_->mu);
    const Cell* cell = nullptr;
    std::string asked;
    if (req->has_claim()) {
      auto key = BucketOf(req->claim());
      asked = key.second;
      auto it = s_->records.find(key);
      if (it != s_->records.end() && it->second.record.status() == cv1::Record::ACTIVE) {
        cell = s_->FindCell(it->second.record.cell_id());
      }
    } else {
      asked = req->value();
      switch (req->type()) {
        case ts::FIRST_CELL:
          if (!s_->cells.empty()) cell = &s_->cells.front();
          break;
        case ts::SESSION_PREFIX:
          for (const Cell& c : s_->cells) {
            if (!c.session_prefix.empty() && c.session_prefix == req->value()) cell = &c;
          }
          break;
        case ts::CELL_ID:
          try {
            cell = s_->FindCell(std::stoll(req->value()));
          } catch (const std::exception&) {
          }
          break;
        default:
          return Status(StatusCode::INVALID_ARGUMENT, "classify: no type and no claim");
      }
    }
    if (cell == nullptr) return Status(StatusCode::NOT_FOUND, "cell not found: \"" + asked + "\"");
    resp->set_action(ts::PROXY);
    resp->mutable_proxy()->set_address(invalid ? "nowhere.invalid:1" : cell->address);
    return Status::OK;
  }

 private:
  std::shared_ptr<Server::State> s_;
};

class CellServiceImpl final : public ts::CellService::Service {
 public:
  explicit CellServiceImpl(std::shared_ptr<Server::State> s) : s_(std::move(s)) {}
  Status GetCell(ServerContext* ctx, const ts::GetCellRequest* req,
                 ts::GetCellResponse* resp) override {
    Status st;
    bool invalid = false;
    if (!s_->Enter("GetCell", ctx, &st, &invalid)) return st;
    std::lock_guard<std::mutex> lock(s_->mu);
    const Cell* c = s_->FindCell(req->cell_id());
    if (c == nullptr) {
      return Status(StatusCode::NOT_FOUND, "cell not found: " + std::to_string(req->cell_id()));
    }
    s_->Fill(*c, resp->mutable_cell_info());
    return Status::OK;
  }

 private:
  std::shared_ptr<Server::State> s_;
};

class HealthServiceImpl final : public ts::HealthService::Service {
 public:
  explicit HealthServiceImpl(std::shared_ptr<Server::State> s) : s_(std::move(s)) {}
  Status ReadinessProbe(ServerContext* ctx, const ts::ReadinessProbeRequest*,
                        ts::ReadinessProbeResponse*) override {
    Status st;
    bool invalid = false;
    return s_->Enter("ReadinessProbe", ctx, &st, &invalid) ? Status::OK : st;
  }
  Status LivenessProbe(ServerContext* ctx, const ts::LivenessProbeRequest*,
                       ts::LivenessProbeResponse*) override {
    Status st;
    bool invalid = false;
    return s_->Enter("LivenessProbe", ctx, &st, &invalid) ? Status::OK : st;
  }

 private:
  std::shared_ptr<Server::State> s_;
};

class ClaimServiceImpl final : public cv1::ClaimService::Service {
 public:
  explicit ClaimServiceImpl(std::shared_ptr<Server::State> s) : s_(std::move(s)) {}

  Status GetCells(ServerContext* ctx, const cv1::GetCellsRequest*,
                  cv1::GetCellsResponse* resp) override {
    Status st;
    bool invalid = false;
    if (!s_->Enter("ClaimService.GetCells", ctx, &st, &invalid)) return st;
    std::lock_guard<std::mutex> lock(s_->mu);
    for (const Cell& c : s_->cells) s_->Fill(c, resp->add_cells());
    return Status::OK;
  }

  Status GetRecord(ServerContext* ctx, const cv1::GetRecordRequest* req,
                   cv1::GetRecordResponse* resp) override {
    Status st;
    bool invalid = false;
    if (!s_->Enter("GetRecord", ctx, &st, &invalid)) return st;
    std::lock_guard<std::mutex> lock(s_->mu);
    s_->ExpireLeases();
    std::pair<int, std::string> key{static_cast<int>(req->bucket().type()), req->bucket().value()};
    if (req->has_claim()) key = BucketOf(req->claim());
    auto it = s_->records.find(key);
    if (it == s_->records.end()) return Status(StatusCode::NOT_FOUND, "record not found");
    *resp->mutable_record() = it->second.record;
    if (const Cell* c = s_->FindCell(it->second.record.cell_id())) {
      s_->Fill(*c, resp->mutable_cell_info());
    }
    return Status::OK;
  }

  Status BeginUpdate(ServerContext* ctx, const cv1::BeginUpdateRequest* req,
                     cv1::BeginUpdateResponse* resp) override {
    Status st;
    bool invalid = false;
    if (!s_->Enter("BeginUpdate", ctx, &st, &invalid)) return st;
    std::lock_guard<std::mutex> lock(s_->mu);
    s_->ExpireLeases();
    if (s_->FindCell(req->cell_id()) == nullptr) {
      return Status(StatusCode::INVALID_ARGUMENT, "unknown cell " + std::to_string(req->cell_id()));
    }
    // Check everything first: a lease is all or nothing.
    for (const auto& m : req->create_records()) {
      std::pair<int, std::string> key{static_cast<int>(m.bucket().type()), m.bucket().value()};
      if (key.first == 0 || key.second.empty()) {
        return Status(StatusCode::INVALID_ARGUMENT, "a record needs a bucket type and value");
      }
      if (s_->records.count(key)) {
        return Status(StatusCode::ALREADY_EXISTS, "already claimed: " + key.second);
      }
    }
    for (const auto& m : req->destroy_records()) {
      std::pair<int, std::string> key{static_cast<int>(m.bucket().type()), m.bucket().value()};
      auto it = s_->records.find(key);
      if (it == s_->records.end() || it->second.record.cell_id() != req->cell_id() ||
          it->second.record.status() != cv1::Record::ACTIVE) {
        return Status(StatusCode::FAILED_PRECONDITION,
                      "not an active record of this cell: " + key.second);
      }
    }
    std::string lease = s_->NewUuid();
    auto now = std::chrono::system_clock::now();
    Server::State::Lease l{req->cell_id(), now, {}, {}};
    for (const auto& m : req->create_records()) {
      std::pair<int, std::string> key{static_cast<int>(m.bucket().type()), m.bucket().value()};
      Server::State::Rec rec;
      rec.record.mutable_uuid()->set_value(s_->NewUuid());
      *rec.record.mutable_metadata() = m;
      rec.record.set_cell_id(req->cell_id());
      rec.record.set_status(cv1::Record::LEASE_CREATING);
      rec.record.mutable_lease_uuid()->set_value(lease);
      Stamp(rec.record.mutable_created_at(), now);
      Stamp(rec.record.mutable_updated_at(), now);
      s_->records[key] = rec;
      l.creating.push_back(key);
    }
    for (const auto& m : req->destroy_records()) {
      std::pair<int, std::string> key{static_cast<int>(m.bucket().type()), m.bucket().value()};
      auto& r = s_->records[key].record;
      r.set_status(cv1::Record::LEASE_DESTROYING);
      r.mutable_lease_uuid()->set_value(lease);
      Stamp(r.mutable_updated_at(), now);
      l.destroying.push_back(key);
    }
    s_->leases[lease] = std::move(l);
    resp->set_cell_id(req->cell_id());
    resp->mutable_lease_uuid()->set_value(lease);
    return Status::OK;
  }

  Status CommitUpdate(ServerContext* ctx, const cv1::CommitUpdateRequest* req,
                      cv1::CommitUpdateResponse*) override {
    Status st;
    bool invalid = false;
    if (!s_->Enter("CommitUpdate", ctx, &st, &invalid)) return st;
    std::lock_guard<std::mutex> lock(s_->mu);
    s_->ExpireLeases();
    auto it = s_->leases.find(req->lease_uuid().value());
    if (it == s_->leases.end()) return Status(StatusCode::NOT_FOUND, "no such lease");
    if (it->second.cell_id != req->cell_id()) {
      return Status(StatusCode::FAILED_PRECONDITION, "the lease belongs to another cell");
    }
    auto now = std::chrono::system_clock::now();
    for (const auto& k : it->second.creating) {
      auto& r = s_->records[k].record;
      r.set_status(cv1::Record::ACTIVE);
      r.clear_lease_uuid();
      Stamp(r.mutable_updated_at(), now);
    }
    for (const auto& k : it->second.destroying) s_->records.erase(k);
    s_->leases.erase(it);
    return Status::OK;
  }

  Status RollbackUpdate(ServerContext* ctx, const cv1::RollbackUpdateRequest* req,
                        cv1::RollbackUpdateResponse*) override {
    Status st;
    bool invalid = false;
    if (!s_->Enter("RollbackUpdate", ctx, &st, &invalid)) return st;
    std::lock_guard<std::mutex> lock(s_->mu);
    auto it = s_->leases.find(req->lease_uuid().value());
    if (it == s_->leases.end()) return Status(StatusCode::NOT_FOUND, "no such lease");
    if (it->second.cell_id != req->cell_id()) {
      return Status(StatusCode::FAILED_PRECONDITION, "the lease belongs to another cell");
    }
    s_->RollbackLocked(it->second);
    s_->leases.erase(it);
    return Status::OK;
  }

  Status ListLeases(ServerContext* ctx, const cv1::ListLeasesRequest* req,
                    cv1::ListLeasesResponse* resp) override {
    Status st;
    bool invalid = false;
    if (!s_->Enter("ListLeases", ctx, &st, &invalid)) return st;
    std::lock_guard<std::mutex> lock(s_->mu);
    s_->ExpireLeases();
    int limit = req->has_limit() && req->limit() > 0 ? req->limit() : 1000;
    for (const auto& [uuid, l] : s_->leases) {
      if (l.cell_id != req->cell_id()) continue;
      if (req->has_created_after()) {
        auto after = std::chrono::system_clock::time_point(
            std::chrono::seconds(req->created_after().seconds()));
        if (l.created <= after) continue;
      }
      if (resp->leases_size() >= limit) break;
      auto* lr = resp->add_leases();
      lr->mutable_uuid()->set_value(uuid);
      Stamp(lr->mutable_created_at(), l.created);
      Stamp(lr->mutable_updated_at(), l.created);
    }
    return Status::OK;
  }

  Status ListRecords(ServerContext* ctx, const cv1::ListRecordsRequest* req,
                     cv1::ListRecordsResponse* resp) override {
    Status st;
    bool invalid = false;
    if (!s_->Enter("ListRecords", ctx, &st, &invalid)) return st;
    std::lock_guard<std::mutex> lock(s_->mu);
    s_->ExpireLeases();
    for (const auto& [key, rec] : s_->records) {
      const auto& r = rec.record;
      if (r.cell_id() != req->cell_id()) continue;
      if (req->source_type() != cv1::Source::UNSPECIFIED &&
          r.metadata().source().type() != req->source_type()) {
        continue;
      }
      if (req->bucket_types_size() > 0 &&
          std::find(req->bucket_types().begin(), req->bucket_types().end(),
                    r.metadata().bucket().type()) == req->bucket_types().end()) {
        continue;
      }
      const std::string& id = r.metadata().source().rails_primary_key_id();
      if (!req->source_id_gt().empty() && !(id > req->source_id_gt())) continue;
      if (!req->source_id_lte().empty() && !(id <= req->source_id_lte())) continue;
      *resp->add_records() = r;
    }
    resp->set_truncated(false);
    return Status::OK;
  }

 private:
  std::shared_ptr<Server::State> s_;
};

}  // namespace

Result<std::unique_ptr<Server>> Server::Start(Options options) {
  std::unique_ptr<Server> srv(new Server());
  srv->state_ = std::make_shared<State>();
  State& st = *srv->state_;
  st.cells = options.topology.cells();
  st.lease_ttl = options.lease_ttl;
  st.log = std::move(options.log);
  if (options.claims) {
    auto now = std::chrono::system_clock::now();
    for (const ClaimEntry& e : options.claims->Entries()) {
      State::Rec rec;
      rec.record.mutable_uuid()->set_value(st.NewUuid());
      rec.record.mutable_metadata()->mutable_bucket()->set_type(
          static_cast<cv1::Bucket::Type>(ClaimFieldNumber(e.type)));
      rec.record.mutable_metadata()->mutable_bucket()->set_value(e.value);
      rec.record.set_cell_id(e.cell_id);
      rec.record.set_status(cv1::Record::ACTIVE);
      Stamp(rec.record.mutable_created_at(), now);
      Stamp(rec.record.mutable_updated_at(), now);
      st.records[{ClaimFieldNumber(e.type), e.value}] = rec;
    }
  }

  std::shared_ptr<grpc::ServerCredentials> creds;
  if (options.cert_file.empty()) {
    creds = grpc::InsecureServerCredentials();
  } else {
    grpc::SslServerCredentialsOptions ssl(
        options.client_ca_file.empty()
            ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
            : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_key_cert_pairs.push_back({ReadAll(options.key_file), ReadAll(options.cert_file)});
    if (!options.client_ca_file.empty()) ssl.pem_root_certs = ReadAll(options.client_ca_file);
    creds = grpc::SslServerCredentials(ssl);
  }

  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, creds, &srv->port_);
  srv->services_.push_back(std::make_unique<ClassifyServiceImpl>(srv->state_));
  srv->services_.push_back(std::make_unique<CellServiceImpl>(srv->state_));
  srv->services_.push_back(std::make_unique<HealthServiceImpl>(srv->state_));
  srv->services_.push_back(std::make_unique<ClaimServiceImpl>(srv->state_));
  for (auto& s : srv->services_) builder.RegisterService(s.get());
  srv->server_ = builder.BuildAndStart();
  if (!srv->server_ || srv->port_ == 0) {
    return cellroute::Status::Unavailable("dev topology server: cannot listen on " +
                                          options.listen);
  }
  return srv;
}

Server::~Server() { Shutdown(); }

void Server::Shutdown() {
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
    server_->Wait();
    server_.reset();
  }
}

void Server::SetFault(const std::string& method, Fault fault) {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->faults[method] = fault;
}

void Server::ClearFaults() {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->faults.clear();
}

void Server::SetCells(std::vector<Cell> cells) {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->cells = std::move(cells);
}

void Server::SetClaim(ClassifyType type, const std::string& value, std::int64_t cell_id) {
  std::lock_guard<std::mutex> lock(state_->mu);
  State::Rec rec;
  rec.record.mutable_metadata()->mutable_bucket()->set_type(
      static_cast<cv1::Bucket::Type>(ClaimFieldNumber(type)));
  rec.record.mutable_metadata()->mutable_bucket()->set_value(value);
  rec.record.set_cell_id(cell_id);
  rec.record.set_status(cv1::Record::ACTIVE);
  state_->records[{ClaimFieldNumber(type), value}] = rec;
}

void Server::RemoveClaim(ClassifyType type, const std::string& value) {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->records.erase({ClaimFieldNumber(type), value});
}

std::string Server::LastMetadata(const std::string& key) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto it = state_->metadata.find(key);
  return it == state_->metadata.end() ? std::string() : it->second;
}

int Server::Calls(const std::string& method) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto it = state_->calls.find(method);
  return it == state_->calls.end() ? 0 : it->second;
}

}  // namespace cellroute::devserver
