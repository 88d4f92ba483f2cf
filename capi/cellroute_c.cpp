// The C ABI: noexcept adapters over the C++ API. No exception crosses this boundary; every
// entry point catches everything and maps it to a CR_E* code with a message in the thread's
// error record.
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <memory>
#include <new>
#include <optional>
#include <string>

#include "cellroute.h"
#include "cellroute/router.h"
#include "cellroute/table.h"
#include "cellroute/token.h"
#include "cellroute/topology_service.h"

namespace {

using cellroute::RouterConfig;
using cellroute::Status;
using cellroute::StatusCode;

struct ErrorRecord {
  std::string message;
  cr_error view{CR_OK, ""};
};
thread_local ErrorRecord t_error;

int Fail(int code, std::string message) {
  t_error.message = std::move(message);
  t_error.view.code = code;
  t_error.view.message = t_error.message.c_str();
  return code;
}

int Ok() {
  t_error.message.clear();
  t_error.view.code = CR_OK;
  t_error.view.message = "";
  return CR_OK;
}

int FromStatus(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk:
      return Ok();
    case StatusCode::kInvalid:
      return Fail(CR_EINVALID, s.message());
    case StatusCode::kNotFound:
      return Fail(CR_ENOTFOUND, s.message());
    case StatusCode::kUnavailable:
      return Fail(CR_EUNAVAILABLE, s.message());
    case StatusCode::kTimeout:
      return Fail(CR_ETIMEOUT, s.message());
    case StatusCode::kInternal:
      break;
  }
  return Fail(CR_EINTERNAL, s.message());
}

// Runs fn, turning any exception into a code.
template <typename Fn>
int Guard(Fn&& fn) noexcept {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return Fail(CR_ENOMEM, "out of memory");
  } catch (const std::exception& e) {
    return Fail(CR_EINTERNAL, e.what());
  } catch (...) {
    return Fail(CR_EINTERNAL, "unknown error");
  }
}

int Null(const char* what) { return Fail(CR_EINVALID, std::string(what) + " is NULL"); }

std::string_view View(const char* p, size_t n) {
  return p ? std::string_view(p, n) : std::string_view();
}

char* Dup(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out == nullptr) throw std::bad_alloc();
  std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

}  // namespace

struct cr_options {
  cellroute::RouterConfig config;
};

struct cr_router {
  cr_options options;  // the latest that loaded: a forked child rebuilds from these
  cellroute::BuiltRouter built;
  pid_t pid;
  std::mutex reload;  // one reload at a time (routing never takes it)
};

struct cr_decision {
  cellroute::Decision d;
  // NUL-terminated copies made when an accessor asks.
  mutable char rule[cellroute::Outcome::kBufferBytes + 1];
  mutable char value[cellroute::Outcome::kBufferBytes + 1];
  mutable char reason[cellroute::Outcome::kBufferBytes + 1];
};

namespace {

const char* Terminated(std::string_view s, char* buf) {
  std::size_t n = std::min(s.size(), cellroute::Outcome::kBufferBytes);
  if (n > 0) std::memcpy(buf, s.data(), n);  // an empty view may have no data pointer
  buf[n] = '\0';
  return buf;
}

cellroute::RequestView ToView(const cr_request* r, std::vector<cellroute::Header>* headers,
                              std::vector<cellroute::Header>* cookies) {
  cellroute::RequestView v;
  v.method = View(r->method, r->method_len);
  v.host = View(r->host, r->host_len);
  v.path = View(r->path, r->path_len);
  v.query = View(r->query, r->query_len);
  // cr_header and cellroute::Header differ in layout: convert into the caller's scratch.
  headers->clear();
  for (size_t i = 0; i < r->header_count; ++i) {
    headers->push_back({View(r->headers[i].name, r->headers[i].name_len),
                        View(r->headers[i].value, r->headers[i].value_len)});
  }
  cookies->clear();
  for (size_t i = 0; i < r->cookie_count; ++i) {
    cookies->push_back({View(r->cookies[i].name, r->cookies[i].name_len),
                        View(r->cookies[i].value, r->cookies[i].value_len)});
  }
  v.headers = *headers;
  v.cookies = *cookies;
  return v;
}

// Per-thread scratch for the header conversion: no allocation once warm.
struct Scratch {
  std::vector<cellroute::Header> headers, cookies;
};
thread_local Scratch t_scratch;

// The decision a cr_router_route_async callback borrows: one per thread, reused, so an answer
// that needs no waiting (the common case in an event loop) costs no allocation and no clearing
// of a cr_decision's buffers. A callback that routes asynchronously again from inside gets a
// fresh one.
struct AsyncDecision {
  std::unique_ptr<cr_decision> decision;
  bool in_use = false;
};
thread_local AsyncDecision t_async;

void CallBack(cr_route_cb callback, void* payload, const cellroute::Decision& d) {
  if (t_async.in_use) {
    auto wrapped = std::make_unique<cr_decision>();
    wrapped->d = d;
    callback(wrapped.get(), payload);
    return;
  }
  if (!t_async.decision) t_async.decision = std::make_unique<cr_decision>();
  t_async.in_use = true;
  t_async.decision->d = d;
  callback(t_async.decision.get(), payload);
  t_async.in_use = false;
}

int CheckRequest(const cr_request* r) {
  if (r == nullptr) return Null("request");
  if (r->size < sizeof(cr_request)) {
    return Fail(CR_EINVALID, "request: size is " + std::to_string(r->size) + ", expected " +
                                 std::to_string(sizeof(cr_request)) + " (use CR_REQUEST_INIT)");
  }
  if ((r->header_count && !r->headers) || (r->cookie_count && !r->cookies)) {
    return Null("request headers or cookies");
  }
  return CR_OK;
}

// Sets one source of the configuration: a file, or the text itself (the other is cleared).
int SetSource(cr_options* o, std::string cellroute::RouterConfig::*path_field,
              std::optional<std::string> cellroute::RouterConfig::*text_field, const char* path,
              const char* text, size_t len) {
  if (o == nullptr) return Null("options");
  if (path == nullptr && text == nullptr) return Null("source");
  if (path != nullptr && *path == '\0') return Fail(CR_EINVALID, "empty file name");
  o->config.*path_field = path ? path : "";
  if (text != nullptr) {
    o->config.*text_field = std::string(text, len);  // empty text fails when the router is built
  } else {
    o->config.*text_field = std::nullopt;
  }
  return Ok();
}

}  // namespace

extern "C" {

const cr_error* cr_error_last(void) { return &t_error.view; }

const char* cr_version(void) { return CR_VERSION_STRING; }

void cr_string_free(char* s) { std::free(s); }

int cr_options_new(cr_options** out) {
  return Guard([&] {
    if (out == nullptr) return Null("out");
    *out = new cr_options();
    return Ok();
  });
}

void cr_options_free(cr_options* options) { delete options; }

int cr_options_set_rules_file(cr_options* o, const char* path) {
  return Guard([&] {
    return SetSource(o, &RouterConfig::rules_path, &RouterConfig::rules_text, path, nullptr, 0);
  });
}
int cr_options_set_rules_text(cr_options* o, const char* json, size_t len) {
  return Guard([&] {
    return SetSource(o, &RouterConfig::rules_path, &RouterConfig::rules_text, nullptr, json, len);
  });
}
int cr_options_set_topology_file(cr_options* o, const char* path) {
  return Guard([&] {
    return SetSource(o, &RouterConfig::topology_path, &RouterConfig::topology_text, path, nullptr,
                     0);
  });
}
int cr_options_set_topology_text(cr_options* o, const char* toml, size_t len) {
  return Guard([&] {
    return SetSource(o, &RouterConfig::topology_path, &RouterConfig::topology_text, nullptr, toml,
                     len);
  });
}
int cr_options_set_claims_file(cr_options* o, const char* path) {
  return Guard([&] {
    return SetSource(o, &RouterConfig::claims_path, &RouterConfig::claims_text, path, nullptr, 0);
  });
}
int cr_options_set_claims_text(cr_options* o, const char* json, size_t len) {
  return Guard([&] {
    return SetSource(o, &RouterConfig::claims_path, &RouterConfig::claims_text, nullptr, json, len);
  });
}

int cr_options_set_topology_service(cr_options* o, const char* address) {
  return Guard([&] {
    if (o == nullptr || address == nullptr) return Null("options or address");
    o->config.service.address = address;
    return Ok();
  });
}

int cr_options_set_tls(cr_options* o, const char* ca, const char* cert, const char* key,
                       const char* server_name) {
  return Guard([&] {
    if (o == nullptr || ca == nullptr) return Null("options or ca_file");
    o->config.service.ca_file = ca;
    o->config.service.cert_file = cert ? cert : "";
    o->config.service.key_file = key ? key : "";
    o->config.service.server_name = server_name ? server_name : "";
    return Ok();
  });
}

int cr_options_add_metadata(cr_options* o, const char* key, const char* value) {
  return Guard([&] {
    if (o == nullptr || key == nullptr || value == nullptr) return Null("options, key or value");
    o->config.service.metadata.emplace_back(key, value);
    return Ok();
  });
}

int cr_options_set_snapshot_path(cr_options* o, const char* path) {
  return Guard([&] {
    if (o == nullptr || path == nullptr) return Null("options or path");
    o->config.service.snapshot_path = path;
    return Ok();
  });
}

int cr_options_set_event_callback(cr_options* o, cr_event_cb callback, void* payload) {
  return Guard([&] {
    if (o == nullptr) return Null("options");
    if (callback == nullptr) {
      o->config.on_event = nullptr;
      return Ok();
    }
    o->config.on_event = [callback, payload](const cellroute::Event& e) {
      std::string json = e.ToJson();
      callback(cellroute::EventName(e.kind).data(), json.c_str(), payload);  // a literal: NUL-ended
    };
    return Ok();
  });
}

int cr_options_set_ms(cr_options* o, const char* which, int64_t ms) {
  return Guard([&] {
    if (o == nullptr || which == nullptr) return Null("options or which");
    if (ms <= 0) return Fail(CR_EINVALID, "milliseconds must be positive");
    std::string w = which;
    std::chrono::milliseconds v(ms);
    if (w == "call") {
      o->config.service.call_deadline = v;
    } else if (w == "classify") {
      o->config.service.classify_deadline = v;
    } else if (w == "poll") {
      o->config.service.poll_interval = v;
    } else if (w == "stop") {
      o->config.service.stop_deadline = v;
    } else {
      return Fail(CR_EINVALID,
                  "unknown setting '" + w + "' (expected call, classify, poll or stop)");
    }
    return Ok();
  });
}

int cr_options_set_limit(cr_options* o, const char* which, int64_t value) {
  return Guard([&] {
    if (o == nullptr || which == nullptr) return Null("options or which");
    std::string w = which;
    if (value <= 0) return Fail(CR_EINVALID, w + ": must be positive");
    if (w == "max_pending") {
      o->config.service.max_pending = static_cast<std::size_t>(value);
    } else if (w == "max_cached_entries") {
      o->config.table.max_cached_entries = static_cast<std::size_t>(value);
    } else if (w == "max_response_bytes") {
      if (value < 1024 || value > INT32_MAX) {
        return Fail(CR_EINVALID, "max_response_bytes: from 1024 to 2147483647");
      }
      o->config.service.max_response_bytes = static_cast<int>(value);
    } else {
      return Fail(CR_EINVALID, "unknown limit '" + w +
                                   "' (expected max_pending, max_cached_entries or "
                                   "max_response_bytes)");
    }
    return Ok();
  });
}

int cr_router_new(cr_router** out, const cr_options* options) {
  return Guard([&] {
    if (out == nullptr) return Null("out");
    *out = nullptr;
    cr_options opts = options ? *options : cr_options();
    auto built = cellroute::BuildRouter(opts.config);
    if (!built.ok()) return FromStatus(built.status());
    *out = new cr_router{std::move(opts), std::move(built).value(), getpid(), {}};
    return Ok();
  });
}

void cr_router_free(cr_router* router) {
  if (router == nullptr) return;
  try {
    if (router->built.client && router->pid != getpid()) {
      // The client's threads and channel belong to the parent: do not touch them here.
      new std::shared_ptr<cellroute::TopologyServiceClient>(std::move(router->built.client));
    } else if (router->built.client) {
      // Pending async callbacks run now, once, with what the table has; none runs after this
      // returns, even those whose Router copy keeps the client itself alive a little longer.
      router->built.client->Stop();
    }
    // Events queued are delivered now; the callback is not called after this returns.
    if (router->built.events && router->pid == getpid()) router->built.events->Close();
    delete router;
  } catch (...) {
    // Nothing here throws by design; if it ever did, leaking beats aborting the host.
  }
}

int cr_router_after_fork(cr_router* router) {
  return Guard([&] {
    if (router == nullptr) return Null("router");
    if (router->pid != getpid()) {
      if (Status s = cellroute::RebuildAfterFork(&router->built, router->options.config); !s.ok()) {
        return FromStatus(s);
      }
    }
    router->pid = getpid();
    return Ok();
  });
}

int cr_decision_new(cr_decision** out) {
  return Guard([&] {
    if (out == nullptr) return Null("out");
    *out = new cr_decision;  // default-initialized: the string buffers are filled on demand
    return Ok();
  });
}

void cr_decision_free(cr_decision* d) { delete d; }

int cr_decision_record_variables(cr_decision* decision, int record) {
  return Guard([&] {
    if (decision == nullptr) return Null("decision");
    decision->d.RecordVariables(record != 0);
    return Ok();
  });
}

int cr_router_route(cr_decision* out, const cr_router* router, const cr_request* request) {
  return Guard([&] {
    if (out == nullptr || router == nullptr) return Null("out or router");
    if (int rc = CheckRequest(request); rc != CR_OK) return rc;
    router->built.router.Route(ToView(request, &t_scratch.headers, &t_scratch.cookies), &out->d);
    return Ok();
  });
}

int cr_router_route_wait(cr_decision* out, const cr_router* router, const cr_request* request,
                         int64_t timeout_ms) {
  return Guard([&] {
    if (out == nullptr || router == nullptr) return Null("out or router");
    if (int rc = CheckRequest(request); rc != CR_OK) return rc;
    router->built.router.RouteWait(ToView(request, &t_scratch.headers, &t_scratch.cookies),
                                   std::chrono::milliseconds(std::max<int64_t>(timeout_ms, 0)),
                                   &out->d);
    return Ok();
  });
}

int cr_router_route_batch(cr_decision* const* out, const cr_router* router,
                          const cr_request* requests, size_t count) {
  return Guard([&] {
    if ((out == nullptr || requests == nullptr) && count > 0) return Null("out or requests");
    if (router == nullptr) return Null("router");
    for (size_t i = 0; i < count; ++i) {
      if (out[i] == nullptr) return Null("out[i]");
      if (int rc = CheckRequest(&requests[i]); rc != CR_OK) return rc;
      router->built.router.Route(ToView(&requests[i], &t_scratch.headers, &t_scratch.cookies),
                                 &out[i]->d);
    }
    return Ok();
  });
}

int cr_router_route_async(const cr_router* router, const cr_request* request, cr_route_cb callback,
                          void* payload) {
  return Guard([&] {
    if (router == nullptr || callback == nullptr) return Null("router or callback");
    if (int rc = CheckRequest(request); rc != CR_OK) return rc;
    router->built.router.RouteAsync(ToView(request, &t_scratch.headers, &t_scratch.cookies),
                                    [callback, payload](const cellroute::Decision& d) {
                                      CallBack(callback, payload, d);
                                    });
    return Ok();
  });
}

int cr_router_explain(char** out, const cr_router* router, const cr_request* request) {
  return Guard([&] {
    if (out == nullptr || router == nullptr) return Null("out or router");
    if (int rc = CheckRequest(request); rc != CR_OK) return rc;
    auto e = router->built.router.Explain(ToView(request, &t_scratch.headers, &t_scratch.cookies));
    *out = Dup(e.ToJson());
    return Ok();
  });
}

int cr_router_status(char** out, const cr_router* router) {
  return Guard([&] {
    if (out == nullptr || router == nullptr) return Null("out or router");
    *out = Dup(router->built.StatusJson());
    return Ok();
  });
}

int cr_router_metrics(char** out, const cr_router* router) {
  return Guard([&] {
    if (out == nullptr || router == nullptr) return Null("out or router");
    *out = Dup(router->built.router.Metrics());
    return Ok();
  });
}

int cr_router_reload(cr_router* router, const cr_options* options) {
  return Guard([&] {
    if (router == nullptr) return Null("router");
    cr_options opts = options ? *options : cr_options();
    std::lock_guard<std::mutex> lock(router->reload);
    if (Status s = cellroute::ReloadRouter(&router->built, opts.config); !s.ok()) {
      return FromStatus(s);
    }
    router->options = std::move(opts);
    return Ok();
  });
}

int cr_decision_result(const cr_decision* d) {
  if (d == nullptr) return CR_RESULT_NO_MATCH;
  switch (d->d.outcome().kind()) {
    case cellroute::Outcome::Kind::kMatched:
      return CR_RESULT_MATCHED;
    case cellroute::Outcome::Kind::kRejected:
      return CR_RESULT_REJECTED;
    case cellroute::Outcome::Kind::kNoMatch:
      break;
  }
  return CR_RESULT_NO_MATCH;
}

// The names below come from string literals: NUL-terminated views.
const char* cr_decision_rule(const cr_decision* d) {
  return d ? Terminated(d->d.rule_id(), d->rule) : "";
}
const char* cr_decision_action(const cr_decision* d) {
  return d ? d->d.action_header().data() : "";
}
const char* cr_decision_type(const cr_decision* d) { return d ? d->d.type_header().data() : ""; }
const char* cr_decision_value(const cr_decision* d) {
  return d ? Terminated(d->d.value(), d->value) : "";
}
int64_t cr_decision_cell_id(const cr_decision* d) { return d ? d->d.cell_id() : 0; }
const char* cr_decision_address(const cr_decision* d) {
  return d ? d->d.resolution().address.data() : "";
}
const char* cr_decision_source(const cr_decision* d) {
  return d ? cellroute::SourceName(d->d.source()).data() : "";
}
const char* cr_decision_fallback(const cr_decision* d) {
  return d ? cellroute::FallbackName(d->d.fallback()).data() : "";
}
const char* cr_decision_reason(const cr_decision* d) {
  return d ? Terminated(d->d.outcome().reason(), d->reason) : "";
}
int64_t cr_decision_age_ms(const cr_decision* d) { return d ? d->d.resolution().age_ms : 0; }

int cr_decision_json(char** out, const cr_decision* d) {
  return Guard([&] {
    if (out == nullptr || d == nullptr) return Null("out or decision");
    *out = Dup(d->d.ToJson());
    return Ok();
  });
}

int cr_token_decode(char** out, const char* token, size_t token_len) {
  return Guard([&] {
    if (out == nullptr || (token == nullptr && token_len > 0)) return Null("out or token");
    *out = nullptr;
    auto p = cellroute::token::Decode(View(token, token_len));
    if (!p.ok()) return FromStatus(p.status());
    *out = Dup(p->ToJson());
    return Ok();
  });
}

int cr_token_encode(char** out, const char* prefix, const char* const* keys, const int64_t* values,
                    size_t count, const uint8_t* random) {
  return Guard([&] {
    if (out == nullptr || ((keys == nullptr || values == nullptr) && count > 0)) {
      return Null("out, keys or values");
    }
    *out = nullptr;
    cellroute::token::EncodeOptions opt;
    opt.prefix = prefix ? prefix : "";
    for (size_t i = 0; i < count; ++i) {
      if (keys[i] == nullptr) return Null("keys[i]");
      opt.fields.emplace_back(keys[i], values[i]);
    }
    if (random != nullptr) {
      std::array<std::uint8_t, cellroute::token::kRandomBytes> r{};
      std::memcpy(r.data(), random, r.size());
      opt.random = r;
    }
    auto t = cellroute::token::Encode(opt);
    if (!t.ok()) return FromStatus(t.status());
    *out = Dup(t.value());
    return Ok();
  });
}

}  // extern "C"
