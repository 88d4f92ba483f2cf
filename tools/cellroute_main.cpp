// cellroute: route requests, explain decisions, validate configuration, decode and encode
// routable tokens. Scripts drive it: every subcommand has --json output and stable exit codes
// (0 ok, 1 bad input such as an invalid ruleset or a non-routable token, 2 usage or
// configuration error).
#include <cellroute/router.h>
#include <cellroute/table.h>
#include <cellroute/token.h>
#include <cellroute/topology_service.h>
#include <cellroute/version.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

using json = nlohmann::json;

constexpr int kExitOk = 0;
constexpr int kExitBadInput = 1;
constexpr int kExitUsage = 2;
constexpr int kExitNoTopology = 3;

// Output stays valid JSON whatever bytes a request, a file or a service sent: what is not
// UTF-8 is replaced (U+FFFD), never a reason to throw.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string Label(const cellroute::Request& r) {
  return r.method + " " + r.path + (r.query.empty() ? "" : "?" + r.query);
}

// {"method": "GET", "host": "...", "path": "/...", "headers": {"name": "value"}}
bool ParseRequestLine(const std::string& line, cellroute::Request* out, std::string* error) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::parse_error& e) {
    std::string what = e.what();
    std::size_t col = what.find("column ");
    std::size_t colon = col == std::string::npos ? col : what.find(": ", col);
    *error = std::to_string(e.byte) + ": " +
             (colon == std::string::npos ? what : what.substr(colon + 2));
    return false;
  }
  if (!j.is_object()) {
    *error = "expected a JSON object";
    return false;
  }
  static const std::vector<std::string> kKeys = {"method", "host",    "path",
                                                 "query",  "headers", "id"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (std::find(kKeys.begin(), kKeys.end(), it.key()) == kKeys.end()) {
      *error = "unknown key '" + it.key() + "' (expected method, host, path, query, headers)";
      return false;
    }
  }
  auto str = [&](const char* key, std::string* dst) {
    if (!j.contains(key)) return true;
    if (!j[key].is_string()) {
      *error = std::string(key) + ": expected a string";
      return false;
    }
    *dst = j[key].get<std::string>();
    return true;
  };
  std::string target;
  if (!str("method", &out->method) || !str("host", &out->host) || !str("path", &target) ||
      !str("query", &out->query)) {
    return false;
  }
  if (!j.contains("path")) {
    *error = "path: required";
    return false;
  }
  std::string query = out->query;
  out->SetTarget(target);
  if (!query.empty()) out->query = query;
  if (j.contains("headers")) {
    if (!j["headers"].is_object()) {
      *error = "headers: expected an object of name: value";
      return false;
    }
    for (auto it = j["headers"].begin(); it != j["headers"].end(); ++it) {
      if (it->is_string()) {
        out->AddHeader(it.key(), it->get<std::string>());
      } else if (it->is_array()) {
        for (const auto& v : *it) {
          if (!v.is_string()) {
            *error = "headers." + it.key() + ": expected strings";
            return false;
          }
          out->AddHeader(it.key(), v.get<std::string>());
        }
      } else {
        *error = "headers." + it.key() + ": expected a string or an array of strings";
        return false;
      }
    }
  }
  return true;
}

struct Config {
  std::string rules, topology, claims;
  // With a Topology Service: cells and claims come from it.
  std::string service, tls_ca, tls_cert, tls_key, tls_server_name, snapshot;
  std::vector<std::string> metadata;  // KEY=VALUE, sent with every call
  int wait_ms = 1000;
  bool log_json = false;  // events as JSON lines on stderr
};

void AddServiceOptions(CLI::App* cmd, Config* cfg) {
  cmd->add_option("--topology-service", cfg->service,
                  "HOST:PORT of a Topology Service: cells and claims come from it");
  cmd->add_option("--tls-ca", cfg->tls_ca, "CA certificate (PEM): use mTLS");
  cmd->add_option("--tls-cert", cfg->tls_cert, "Client certificate (PEM)");
  cmd->add_option("--tls-key", cfg->tls_key, "Client key (PEM)");
  cmd->add_option("--tls-server-name", cfg->tls_server_name, "Name to verify on the server");
  cmd->add_option("--snapshot", cfg->snapshot, "Last good topology, read and written here");
  cmd->add_option("--wait-ms", cfg->wait_ms, "How long a request waits for the service");
  cmd->add_option("--metadata", cfg->metadata,
                  "KEY=VALUE sent with every call (e.g. authorization=\"Bearer ...\"); repeatable")
      ->check([](const std::string& kv) {
        return kv.find('=') == std::string::npos || kv.front() == '='
                   ? std::string("expected KEY=VALUE, got '") + kv + "'"
                   : std::string();
      });
  cmd->add_flag("--log-json", cfg->log_json,
                "Print the sync's events (sync_failed, topology_changed, snapshot_written...) "
                "to stderr as JSON lines");
}

cellroute::RouterConfig ConfigFor(const Config& cfg) {
  cellroute::RouterConfig c;
  c.rules_path = cfg.rules;
  c.topology_path = cfg.topology;
  c.claims_path = cfg.claims;
  c.service.address = cfg.service;
  c.service.ca_file = cfg.tls_ca;
  c.service.cert_file = cfg.tls_cert;
  c.service.key_file = cfg.tls_key;
  c.service.server_name = cfg.tls_server_name;
  c.service.snapshot_path = cfg.snapshot;
  for (const std::string& kv : cfg.metadata) {
    std::size_t eq = kv.find('=');
    c.service.metadata.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
  }
  c.service.call_deadline = std::chrono::milliseconds(cfg.wait_ms);
  c.service.classify_deadline = std::chrono::milliseconds(std::max(1, cfg.wait_ms / 4));
  c.service.max_retries = 1;
  if (cfg.log_json) {
    c.on_event = [](const cellroute::Event& e) {
      std::string line = e.ToJson() + "\n";
      std::fwrite(line.data(), 1, line.size(), stderr);  // one write per line
    };
  }
  return c;
}
void AddConfigOptions(CLI::App* cmd, Config* cfg) {
  cmd->add_option("--rules", cfg->rules, "Ruleset JSON (default: the embedded GitLab-style set)");
  cmd->add_option("--topology", cfg->topology,
                  "Topology Service config.toml (default: the embedded three-cell topology)");
  cmd->add_option("--claims", cfg->claims,
                  "Claims JSON: claim type -> value -> cell id (default: the embedded claims "
                  "when the topology is the default)");
}

struct RequestFlags {
  std::string method = "GET", host, path, input;
  std::vector<std::string> headers, cookies;
};

void AddRequestOptions(CLI::App* cmd, RequestFlags* f) {
  cmd->add_option("--method", f->method, "Request method");
  cmd->add_option("--host", f->host, "Request host");
  cmd->add_option("--path", f->path, "Request path (with ?query); routes one request from flags");
  cmd->add_option("--header,-H", f->headers, "Header as 'Name: value' (repeatable)");
  cmd->add_option("--cookie", f->cookies, "Cookie as 'name=value' (repeatable)");
  cmd->add_option("input", f->input,
                  "JSON lines file of requests, '-' for standard input (default when no --path)");
}

bool FromFlags(const RequestFlags& f, cellroute::Request* r, std::string* error) {
  r->method = f.method;
  r->host = f.host;
  r->SetTarget(f.path);
  for (const auto& h : f.headers) {
    std::size_t colon = h.find(':');
    if (colon == std::string::npos || colon == 0) {
      *error = "--header '" + h + "': expected 'Name: value'";
      return false;
    }
    std::string value = h.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    r->AddHeader(h.substr(0, colon), value);
  }
  if (!f.cookies.empty()) {
    std::string cookie;
    for (const auto& c : f.cookies) cookie += (cookie.empty() ? "" : "; ") + c;
    r->AddHeader("cookie", cookie);
  }
  return true;
}

// Calls fn(line_number, request) for each request: from flags, or each JSON line of the input.
// Bad lines are reported (stderr, and to `bad`) and skipped. Returns false on a usage error.
template <typename Fn, typename Bad>
bool ForEachRequest(const RequestFlags& f, Fn&& fn, Bad&& bad) {
  if (!f.path.empty()) {
    if (!f.input.empty()) {
      std::cerr << "cellroute: give --path or an input file, not both\n";
      return false;
    }
    cellroute::Request r;
    std::string error;
    if (!FromFlags(f, &r, &error)) {
      std::cerr << "cellroute: " << error << "\n";
      return false;
    }
    fn(0, r);
    return true;
  }
  std::string name = f.input.empty() || f.input == "-" ? "<stdin>" : f.input;
  std::ifstream file;
  if (name != "<stdin>") {
    file.open(f.input);
    if (!file) {
      std::cerr << "cellroute: " << f.input << ": cannot open\n";
      return false;
    }
  } else if (isatty(STDIN_FILENO)) {
    std::cerr << "cellroute: reading JSON lines from standard input (or give --path or a file)\n";
  }
  std::istream& in = name == "<stdin>" ? std::cin : file;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    cellroute::Request r;
    std::string error;
    bool parsed = false;
    try {
      parsed = ParseRequestLine(line, &r, &error);
      if (parsed) fn(n, r);
    } catch (const std::exception& e) {
      // One line's failure is that line's error; the lines after it still route.
      parsed = false;
      error = std::string("cannot route this line: ") + e.what();
    }
    if (!parsed) {
      std::cerr << name << ":" << n << ": " << error << "\n";
      bad(n, error);
    }
  }
  return true;
}

std::shared_ptr<cellroute::TopologyServiceClient> g_service;

cellroute::Result<cellroute::Router> LoadRouter(const Config& cfg) {
  auto built = cellroute::BuildRouter(ConfigFor(cfg));
  if (!built.ok()) return built.status();
  g_service = built.value().client;
  if (g_service && g_service->status().state != cellroute::TopologyServiceStatus::State::kSyncing) {
    std::cerr << "cellroute: topology service: " << g_service->status().last_error << "\n";
  }
  return std::move(built.value().router);
}

cellroute::Decision Decide(const cellroute::Router& router, const Config& cfg,
                           const cellroute::RequestView& r) {
  return cfg.service.empty() ? router.Route(r)
                             : router.RouteWait(r, std::chrono::milliseconds(cfg.wait_ms));
}

int RunTopologyStatus(const Config& cfg, bool as_json) {
  if (cfg.service.empty()) {
    std::cerr << "cellroute: topology status needs --topology-service HOST:PORT\n";
    return kExitUsage;
  }
  auto router = LoadRouter(cfg);
  if (!router.ok()) {
    std::cerr << router.status().message() << "\n";
    return kExitUsage;
  }
  auto s = g_service->status();
  cellroute::RouteTable::Reader reader(*g_service->table());
  const cellroute::Topology* topology = reader.topology();
  if (as_json) {
    json j = json::parse(s.ToJson());
    j["cells"] = json::array();
    for (const auto& c : topology ? topology->cells() : std::vector<cellroute::Cell>{}) {
      j["cells"].push_back({{"id", c.id}, {"address", c.address},
                            {"session_prefix", c.session_prefix}});
    }
    std::cout << Dump(j) << "\n";
  } else {
    std::cout << "state: " << cellroute::StateName(s.state) << "\n"
              << "topology from: " << (s.topology_source.empty() ? "-" : s.topology_source) << "\n"
              << "table version: " << s.table_version << "\n"
              << "last good sync: "
              << (s.last_good_sync_age_ms < 0 ? std::string("never")
                                              : std::to_string(s.last_good_sync_age_ms) + " ms ago")
              << "\n"
              << "last error: " << (s.last_error.empty() ? "-" : s.last_error) << "\n"
              << "topology hash: " << (s.topology_hash.empty() ? "-" : s.topology_hash) << "\n";
    if (topology != nullptr) {
      for (const auto& c : topology->cells()) {
        std::cout << "cell " << c.id << ": " << c.address
                  << (c.session_prefix.empty() ? "" : " (" + c.session_prefix + ")") << "\n";
      }
    }
  }
  return s.state == cellroute::TopologyServiceStatus::State::kSyncing ? kExitOk : kExitBadInput;
}

std::string Classification(const cellroute::Decision& d) {
  if (d.rejected()) return "rejected (400): " + std::string(d.outcome().reason());
  if (d.action() == cellroute::Action::kProxy) {
    return d.outcome().proxy_address().empty()
               ? "proxy"
               : "proxy " + std::string(d.outcome().proxy_address());
  }
  if (d.action() == cellroute::Action::kNone) return "-";
  std::string s(d.type_header());
  if (!d.value().empty()) s += " " + std::string(d.value());
  return s;
}

std::string CellLabel(const cellroute::Decision& d) {
  if (d.cell_id() == 0) return "-";
  std::string s = std::to_string(d.cell_id());
  if (d.fallback() != cellroute::Fallback::kNone) {
    s += " (fallback: " + std::string(cellroute::FallbackName(d.fallback())) + ")";
  }
  return s;
}

void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()));
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (std::size_t r = 0; r < rows.size(); ++r) {
    std::string line;
    for (std::size_t i = 0; i < rows[r].size(); ++i) {
      std::string cell = rows[r][i];
      if (i + 1 < rows[r].size()) cell.resize(width[i], ' ');
      line += (i ? "  " : "") + cell;
    }
    std::cout << line << "\n";
    if (r == 0) {
      std::string rule;
      for (std::size_t i = 0; i < width.size(); ++i)
        rule += (i ? "  " : "") + std::string(width[i], '-');
      std::cout << rule << "\n";
    }
  }
}

int RunRoute(const Config& cfg, const RequestFlags& flags, bool table, bool metrics) {
  auto router = LoadRouter(cfg);
  if (!router.ok()) {
    std::cerr << router.status().message() << "\n";
    return kExitUsage;
  }
  std::vector<std::vector<std::string>> rows = {
      {"#", "request", "rule", "classification", "cell", "address", "source"}};
  int bad_lines = 0, no_topology = 0;
  bool ok = ForEachRequest(
      flags,
      [&](int n, cellroute::Request& r) {
        cellroute::Decision d = Decide(router.value(), cfg, r.view());
        if (d.fallback() == cellroute::Fallback::kNoTopology) ++no_topology;
        if (table) {
          rows.push_back({n ? std::to_string(n) : "-", Label(r),
                          d.rule_id().empty() ? "(none)" : std::string(d.rule_id()),
                          Classification(d), CellLabel(d),
                          d.address().empty() ? "-" : std::string(d.address()),
                          std::string(cellroute::SourceName(d.source()))});
        } else {
          json j = json::parse(d.ToJson());
          if (n) j["line"] = n;
          std::cout << Dump(j) << "\n";
        }
      },
      [&](int n, const std::string& error) {
        ++bad_lines;
        if (!table) std::cout << Dump(json{{"line", n}, {"error", error}}) << "\n";
      });
  if (!ok) return kExitUsage;
  if (table) PrintTable(rows);
  if (metrics) std::cerr << router.value().Metrics();
  if (no_topology) {
    std::cerr << "cellroute: " << no_topology
              << " request(s) routed nowhere: no topology is known (no snapshot, no --topology, "
                 "and no good answer from the Topology Service)\n";
    return kExitNoTopology;
  }
  return bad_lines ? kExitBadInput : kExitOk;
}

int RunExplain(const Config& cfg, const RequestFlags& flags, bool as_json) {
  auto router = LoadRouter(cfg);
  if (!router.ok()) {
    std::cerr << router.status().message() << "\n";
    return kExitUsage;
  }
  int bad_lines = 0;
  bool ok = ForEachRequest(
      flags,
      [&](int n, cellroute::Request& r) {
        // With a Topology Service, a claim the table lacks is asked for first (as RouteWait
        // would), so that the explanation shows the service's answer and says where it came
        // from.
        std::string answer;
        if (!cfg.service.empty()) {
          cellroute::Decision first = router->Route(r.view());
          if (first.outcome().matched() && cellroute::IsClaim(first.type())) {
            if (first.fallback() == cellroute::Fallback::kPending) {
              router->RouteWait(r.view(), std::chrono::milliseconds(cfg.wait_ms));
              answer = "asked the Topology Service now (Classify)";
            } else if (first.source() == cellroute::Source::kTable ||
                       first.fallback() == cellroute::Fallback::kUnknownClaim) {
              answer = "from the route table, answered by the Topology Service " +
                       std::to_string(first.resolution().age_ms) + " ms ago";
            }
          }
        }
        auto e = router->Explain(r.view());
        if (as_json) {
          json j = json::parse(e.ToJson());
          j["request"] = Label(r);
          if (!answer.empty()) j["claim_answer"] = answer;
          if (n) j["line"] = n;
          std::cout << Dump(j) << "\n";
          return;
        }
        std::cout << (n ? "line " + std::to_string(n) + ": " : "") << Label(r) << "\n";
        for (const auto& t : e.rules.rules) {
          const char* mark = t.result == cellroute::Outcome::Kind::kMatched    ? "MATCH "
                             : t.result == cellroute::Outcome::Kind::kRejected ? "REJECT"
                                                                               : "  -   ";
          std::cout << "  " << mark << " " << t.rule_id << ": " << t.reason << "\n";
        }
        const auto& d = e.decision;
        std::cout << "  => " << Classification(d) << " -> cell " << CellLabel(d) << " "
                  << (d.address().empty() ? "-" : std::string(d.address())) << " ["
                  << cellroute::SourceName(d.source()) << "]\n";
        if (!answer.empty()) std::cout << "  claim: " << answer << "\n";
      },
      [&](int, const std::string&) { ++bad_lines; });
  if (!ok) return kExitUsage;
  return bad_lines ? kExitBadInput : kExitOk;
}

int RunValidate(const Config& cfg, bool as_json) {
  std::vector<std::string> errors;
  auto add = [&](const cellroute::Status& s) {
    std::size_t start = 0;
    const std::string& m = s.message();
    while (start <= m.size()) {
      std::size_t nl = m.find('\n', start);
      std::string line = m.substr(start, nl - start);
      if (!line.empty()) errors.push_back(line);
      if (nl == std::string::npos) break;
      start = nl + 1;
    }
  };
  auto rules = cfg.rules.empty()
                   ? cellroute::Ruleset::Parse(cellroute::defaults::RulesJson(), "<default rules>")
                   : cellroute::Ruleset::LoadFile(cfg.rules);
  if (!rules.ok()) add(rules.status());
  auto topology = cfg.topology.empty()
                      ? cellroute::Topology::ParseToml(cellroute::defaults::TopologyToml(),
                                                       "<default topology>")
                      : cellroute::Topology::LoadFile(cfg.topology);
  if (!topology.ok()) {
    add(topology.status());
    if (!cfg.claims.empty()) {
      errors.push_back(cfg.claims + ": not checked: the topology it refers to is invalid");
    }
  } else if (!cfg.claims.empty() || cfg.topology.empty()) {
    auto claims = cfg.claims.empty()
                      ? cellroute::Claims::Parse(cellroute::defaults::ClaimsJson(),
                                                 "<default claims>", topology.value())
                      : cellroute::Claims::LoadFile(cfg.claims, topology.value());
    if (!claims.ok()) add(claims.status());
  }
  if (as_json) {
    std::cout << Dump(json{{"ok", errors.empty()}, {"errors", errors}}) << "\n";
  } else if (errors.empty()) {
    std::cout << "ok: ruleset "
              << (rules.ok() ? std::to_string(rules->size()) + " rules" : std::string("-"))
              << ", topology "
              << (topology.ok() ? std::to_string(topology->cells().size()) + " cells"
                                : std::string("-"))
              << "\n";
  } else {
    for (const auto& e : errors) std::cerr << e << "\n";
    std::cerr << errors.size() << (errors.size() == 1 ? " error\n" : " errors\n");
  }
  return errors.empty() ? kExitOk : kExitBadInput;
}

int RunTokenDecode(const std::string& token, bool as_json) {
  auto payload = cellroute::token::Decode(token);
  if (!payload.ok()) {
    if (as_json) {
      std::cout << Dump(json{{"routable", false}, {"error", payload.status().message()}}) << "\n";
    }
    std::cerr << "cellroute: " << payload.status().message() << "\n";
    return kExitBadInput;
  }
  if (as_json) {
    std::cout << payload->ToJson() << "\n";
  } else {
    for (const auto& f : payload->fields()) std::cout << f.key() << " = " << f.value << "\n";
  }
  return kExitOk;
}

int RunTokenEncode(const std::string& prefix, const std::string& random_hex,
                   const std::vector<std::string>& fields, bool as_json) {
  cellroute::token::EncodeOptions opt;
  opt.prefix = prefix;
  for (const auto& f : fields) {
    std::size_t eq = f.find('=');
    std::int64_t value = 0;
    std::size_t used = 0;
    bool ok = eq != std::string::npos && eq > 0 && eq + 1 < f.size();
    if (ok) {
      try {
        value = std::stoll(f.substr(eq + 1), &used);
        ok = used == f.size() - eq - 1;
      } catch (const std::exception&) {
        ok = false;
      }
    }
    if (!ok) {
      std::cerr << "cellroute: field '" << f << "': expected key=integer, e.g. c=2\n";
      return kExitUsage;
    }
    opt.fields.emplace_back(f.substr(0, eq), value);
  }
  if (!random_hex.empty()) {
    if (random_hex.size() != 2 * cellroute::token::kRandomBytes ||
        random_hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
      std::cerr << "cellroute: --random: expected 32 hex digits\n";
      return kExitUsage;
    }
    std::array<std::uint8_t, cellroute::token::kRandomBytes> bytes{};
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      bytes[i] = static_cast<std::uint8_t>(std::stoul(random_hex.substr(2 * i, 2), nullptr, 16));
    }
    opt.random = bytes;
  }
  auto token = cellroute::token::Encode(opt);
  if (!token.ok()) {
    std::cerr << "cellroute: " << token.status().message() << "\n";
    return kExitBadInput;
  }
  if (as_json) {
    std::cout << Dump(json{{"token", token.value()}}) << "\n";
  } else {
    std::cout << token.value() << "\n";
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cellroute: decide which cell serves a request"};
  app.require_subcommand(1);
  app.set_version_flag("--version", CR_VERSION_STRING);

  Config cfg;
  RequestFlags flags;
  bool table = false, as_json = false, metrics = false;

  auto* route = app.add_subcommand("route", "Route one request (flags) or many (JSON lines)");
  AddConfigOptions(route, &cfg);
  AddServiceOptions(route, &cfg);
  AddRequestOptions(route, &flags);
  route->add_flag("--table", table, "Print a table instead of JSON lines");
  route->add_flag("--json", as_json, "Print one JSON object per request (the default)");
  route->add_flag("--metrics", metrics,
                  "After routing, print the metrics (Prometheus text format) to stderr");

  auto* explain = app.add_subcommand("explain", "Show every rule tried and why");
  AddConfigOptions(explain, &cfg);
  AddServiceOptions(explain, &cfg);
  AddRequestOptions(explain, &flags);
  explain->add_flag("--json", as_json, "Print JSON");

  auto* topology_cmd = app.add_subcommand("topology", "The Topology Service as cellroute sees it");
  topology_cmd->require_subcommand(1);
  auto* topology_status = topology_cmd->add_subcommand("status", "Sync once and report");
  AddServiceOptions(topology_status, &cfg);
  topology_status->add_option("--topology", cfg.topology, "Static topology when unreachable");
  topology_status->add_flag("--json", as_json, "Print the status as JSON");

  auto* validate = app.add_subcommand("validate", "Check a ruleset, topology and claims file");
  AddConfigOptions(validate, &cfg);
  validate->add_flag("--json", as_json, "Print {\"ok\": ..., \"errors\": [...]}");

  auto* token = app.add_subcommand("token", "Routable tokens");
  token->require_subcommand(1);
  std::string token_text, prefix, random_hex;
  std::vector<std::string> fields;
  auto* decode = token->add_subcommand("decode", "Print a token's routing fields");
  decode->add_option("token", token_text,
                     "The token (after --, as in `token decode -- -Ab...`, when it starts with -)")
      ->required();
  decode->add_flag("--json", as_json, "Print the fields as a JSON object of integers");
  auto* encode = token->add_subcommand("encode", "Mint a routable token");
  encode->add_option("--prefix", prefix, "Token prefix, e.g. glrt-");
  encode->add_option("--random", random_hex, "The 16 random bytes as 32 hex digits");
  encode->add_option("fields", fields, "key=value pairs, e.g. c=2 o=1");
  encode->add_flag("--json", as_json, "Print {\"token\": ...}");

  // A first word that is no subcommand is named, rather than reported as a missing one.
  if (argc > 1 && argv[1][0] != '-') {
    std::string word = argv[1];
    bool known = false;
    std::string names;
    for (const CLI::App* sub : app.get_subcommands({})) {
      known = known || sub->get_name() == word;
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      std::cerr << "cellroute: unknown command '" << word << "' (commands: " << names
                << "; see --help)\n";
      return kExitUsage;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }

  int rc = kExitUsage;
  try {
    if (*route) rc = RunRoute(cfg, flags, table && !as_json, metrics);
    if (*explain) rc = RunExplain(cfg, flags, as_json);
    if (*validate) rc = RunValidate(cfg, as_json);
    if (*topology_status) rc = RunTopologyStatus(cfg, as_json);
    if (*decode) rc = RunTokenDecode(token_text, as_json);
    if (*encode) rc = RunTokenEncode(prefix, random_hex, fields, as_json);
  } catch (const std::exception& e) {
    std::cerr << "cellroute: internal error: " << e.what() << "\n";
    rc = kExitUsage;
  }
  g_service.reset();  // stop the client's threads before static destruction
  return rc;
}
