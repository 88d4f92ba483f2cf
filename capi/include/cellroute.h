/*
 * cellroute.h: the stable C ABI of cellroute.
 *
 * Build a router once, route many requests from any number of threads:
 *
 *   cr_router *router = NULL;
 *   if (cr_router_new(&router, NULL) != CR_OK)          // NULL options: embedded defaults
 *     fprintf(stderr, "%s\n", cr_error_last()->message);
 *
 *   cr_header headers[] = {{"Cookie", 6, "_gitlab_session=cell-2-ab", 25}};
 *   cr_request req = CR_REQUEST_INIT;
 *   req.method = "GET"; req.method_len = 3;
 *   req.path = "/dashboard"; req.path_len = 10;
 *   req.headers = headers; req.header_count = 1;
 *
 *   cr_decision *d = NULL;
 *   cr_decision_new(&d);
 *   if (cr_router_route(d, router, &req) == CR_OK)
 *     printf("%s -> cell %lld\n", cr_decision_address(d), (long long)cr_decision_cell_id(d));
 *   cr_decision_free(d);
 *   cr_router_free(router);
 *
 * Conventions. Every fallible call returns an int: CR_OK (0) or a negative CR_E* code, fixed
 * forever; the detail is in a thread-local record read by cr_error_last(), which never returns
 * NULL. The output parameter comes first and is named out. Every cr_x_new has a cr_x_free that
 * accepts NULL. A cr_decision owns everything it shows: it stays valid after its router is
 * freed. Strings returned by accessors are borrowed: NUL-terminated, owned by the object,
 * valid until it is changed or freed. Strings returned through char **out are owned by the
 * caller and freed with cr_string_free. Input strings are (pointer, length) pairs and need not
 * be NUL-terminated, except paths and option values, which are C strings.
 *
 * Threads. A cr_router may be used by any number of threads at once. A cr_decision and a
 * cr_options belong to one thread at a time. Callbacks run on a cellroute thread.
 *
 * Fork. A router without a Topology Service survives fork() as it is. One with a Topology
 * Service must not be used in a child before cr_router_after_fork(router): that starts a new
 * sync when the parent never started gRPC, else routes from the parent's table as it was at
 * the fork (gRPC cannot be used there). Build routers with a service after forking to have a
 * live sync in every worker. Nothing here blocks past a deadline.
 */
#ifndef CELLROUTE_H
#define CELLROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "cellroute/version.h"

#if defined(__GNUC__)
#define CR_API __attribute__((visibility("default")))
#else
#define CR_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. Values are fixed; new ones are added at the end. */
#define CR_OK 0
#define CR_EINVALID (-1)     /* bad input: arguments, rules, topology, claims, token */
#define CR_ENOTFOUND (-2)    /* what was asked for does not exist */
#define CR_EUNAVAILABLE (-3) /* a file or the Topology Service cannot be reached */
#define CR_ETIMEOUT (-4)     /* a deadline passed */
#define CR_ENOMEM (-5)       /* out of memory */
#define CR_EINTERNAL (-6)    /* a bug in cellroute */

typedef struct cr_error {
  int code;            /* the last call's code on this thread */
  const char *message; /* never NULL; "" after success */
} cr_error;

/* The last error of this thread. Never NULL; valid until the thread's next cellroute call. */
CR_API const cr_error *cr_error_last(void);

/* "0.1.0": the library's version at run time (CR_VERSION_* give the header's). */
CR_API const char *cr_version(void);

/* Frees a string that cellroute returned through char **out. Accepts NULL. */
CR_API void cr_string_free(char *s);

/* ---- options --------------------------------------------------------------------------- */

typedef struct cr_options cr_options;

CR_API int cr_options_new(cr_options **out);
CR_API void cr_options_free(cr_options *options);
/* Each source is a file path or, with the _text setters, the content itself. Unset: the
 * embedded defaults (the default claims apply only with the default topology). Empty text or
 * an empty path is an error (when set, or when the router is built), never the defaults. */
CR_API int cr_options_set_rules_file(cr_options *options, const char *path);
CR_API int cr_options_set_rules_text(cr_options *options, const char *json, size_t len);
CR_API int cr_options_set_topology_file(cr_options *options, const char *path);
CR_API int cr_options_set_topology_text(cr_options *options, const char *toml, size_t len);
CR_API int cr_options_set_claims_file(cr_options *options, const char *path);
CR_API int cr_options_set_claims_text(cr_options *options, const char *json, size_t len);
/* A Topology Service at host:port: cells and claims then come from it (the topology above,
 * if set, serves until it answers). */
CR_API int cr_options_set_topology_service(cr_options *options, const char *address);
/* mTLS with the service; any argument may be NULL except ca_file. */
CR_API int cr_options_set_tls(cr_options *options, const char *ca_file, const char *cert_file,
                              const char *key_file, const char *server_name);
CR_API int cr_options_add_metadata(cr_options *options, const char *key, const char *value);
CR_API int cr_options_set_snapshot_path(cr_options *options, const char *path);
/* Deadlines and intervals, in milliseconds: "call" (GetCells), "classify" (one Classify
 * attempt), "poll" (GetCells interval), "stop" (how long freeing waits for the client). */
CR_API int cr_options_set_ms(cr_options *options, const char *which, int64_t ms);
/* Bounds (docs/reliability.md): "max_pending" (claims waiting to be fetched, and callbacks
 * waiting for them), "max_cached_entries" (the route table's cached answers),
 * "max_response_bytes" (the largest answer accepted from the service, at least 1024). */
CR_API int cr_options_set_limit(cr_options *options, const char *which, int64_t value);
/* Events for logs (docs/operations.md lists them): sync succeeded or failed, topology changed,
 * an answer rejected, reload succeeded or failed, queue full, snapshot written or unreadable.
 * callback(name, json, payload) runs on a cellroute thread, one event at a time, never on a
 * routing thread: name is the event ("sync_failed"), json the whole event as one line
 * ({"time":"...","event":"sync_failed","code":"UNAVAILABLE",...}); both are borrowed for the
 * call. A slow callback only delays later events; past 1024 waiting, events are dropped and
 * then counted by an "events_dropped" one. The callback is never called after
 * cr_router_free returns. A reload keeps the callback the router was built with. NULL: no
 * events. */
typedef void (*cr_event_cb)(const char *name, const char *json, void *payload);
CR_API int cr_options_set_event_callback(cr_options *options, cr_event_cb callback,
                                         void *payload);

/* ---- router ---------------------------------------------------------------------------- */

typedef struct cr_router cr_router;

/* options may be NULL (embedded defaults); it is copied and may be freed afterwards. */
CR_API int cr_router_new(cr_router **out, const cr_options *options);
/* Stops the Topology Service client first: every pending cr_router_route_async callback runs
 * once, with an "unavailable" decision, before this returns, and none runs after. */
CR_API void cr_router_free(cr_router *router);
/* In a child after fork(): a new Topology Service sync if the parent never started gRPC, else
 * the parent's table as it was at the fork, frozen (claims it lacks: "unavailable"). */
CR_API int cr_router_after_fork(cr_router *router);

typedef struct cr_header {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
} cr_header;

/* A request: views of the caller's memory, read only during the call. `size` must be
 * sizeof(cr_request) (CR_REQUEST_INIT sets it), so the struct can grow. */
typedef struct cr_request {
  size_t size;
  const char *method;
  size_t method_len;
  const char *host;
  size_t host_len;
  const char *path; /* without the query */
  size_t path_len;
  const char *query;
  size_t query_len;
  const cr_header *headers; /* cookies are read from "Cookie" headers */
  size_t header_count;
  const cr_header *cookies; /* cookies already parsed, if any */
  size_t cookie_count;
} cr_request;

#define CR_REQUEST_INIT {sizeof(cr_request), NULL, 0, NULL, 0, NULL, 0, NULL, 0, NULL, 0, NULL, 0}

/* ---- decisions ------------------------------------------------------------------------- */

typedef struct cr_decision cr_decision;

CR_API int cr_decision_new(cr_decision **out);
CR_API void cr_decision_free(cr_decision *decision);

/* Routes without waiting: a claim the Topology Service must be asked about comes back with
 * fallback "pending" and the legacy cell. */
CR_API int cr_router_route(cr_decision *out, const cr_router *router, const cr_request *request);
/* Waits up to timeout_ms for a pending answer. The GIL-free, blocking form for Rails and tools. */
CR_API int cr_router_route_wait(cr_decision *out, const cr_router *router,
                                const cr_request *request, int64_t timeout_ms);
/* Routes count requests into out[0..count). */
CR_API int cr_router_route_batch(cr_decision *const *out, const cr_router *router,
                                 const cr_request *requests, size_t count);

/* Called with the decision (borrowed for the call) and the caller's payload: at once from
 * cr_router_route_async when nothing is pending, else later on a cellroute thread. */
typedef void (*cr_route_cb)(const cr_decision *decision, void *payload);
CR_API int cr_router_route_async(const cr_router *router, const cr_request *request,
                                 cr_route_cb callback, void *payload);

/* Every rule tried and the decision, as JSON. */
CR_API int cr_router_explain(char **out, const cr_router *router, const cr_request *request);
/* The Topology Service client's status and counters as JSON ({"state":"static"} without one). */
CR_API int cr_router_status(char **out, const cr_router *router);
/* Every metric in the Prometheus text exposition format (0.0.4): decisions by rule, source and
 * fallback, rejections, a sampled latency histogram, the route table, the topology in use,
 * the Topology Service calls, reloads, the version. docs/operations.md lists them. */
CR_API int cr_router_metrics(char **out, const cr_router *router);
/* Loads options (NULL: the embedded defaults) as cr_router_new does and, when all of it is
 * valid, swaps the new rules, cells and claims in at once: requests in flight finish with the
 * old ones, every later one sees the new. On an error nothing changes, the first error's code
 * is returned (as cr_router_new would: CR_EUNAVAILABLE for a file it cannot read, CR_EINVALID
 * for bad content) and cr_error_last() lists every error with its file:line:column. With a Topology Service only the rules change and its client keeps
 * running; a reload cannot add or remove the service. Safe while other threads route. */
CR_API int cr_router_reload(cr_router *router, const cr_options *options);

/* Results of a decision. */
#define CR_RESULT_NO_MATCH 0
#define CR_RESULT_MATCHED 1
#define CR_RESULT_REJECTED 2 /* malformed input (a corrupt token): answer HTTP 400 */

CR_API int cr_decision_result(const cr_decision *decision);
CR_API const char *cr_decision_rule(const cr_decision *decision);
CR_API const char *cr_decision_action(const cr_decision *decision); /* Rule-Action header */
CR_API const char *cr_decision_type(const cr_decision *decision);   /* Rule-Type header */
CR_API const char *cr_decision_value(const cr_decision *decision);
CR_API int64_t cr_decision_cell_id(const cr_decision *decision); /* 0: no cell */
CR_API const char *cr_decision_address(const cr_decision *decision);
CR_API const char *cr_decision_source(const cr_decision *decision);
/* "" when none; else no_rule_matched, unknown_cell, unknown_claim, unavailable, pending, or
 * no_topology (no cell list known at all: no cell and no address). */
CR_API const char *cr_decision_fallback(const cr_decision *decision);
CR_API const char *cr_decision_reason(const cr_decision *decision);   /* why rejected */
CR_API int64_t cr_decision_age_ms(const cr_decision *decision);
/* The whole decision as JSON (variables included, when recorded). */
CR_API int cr_decision_json(char **out, const cr_decision *decision);
/* Whether routing into `decision` records the deciding rule's variables (shown only by
 * cr_decision_json): 1 (the default) or 0. A caller that never shows them passes 0, and its
 * routes cost less; the decision is the same either way. */
CR_API int cr_decision_record_variables(cr_decision *decision, int record);

/* ---- routable tokens ------------------------------------------------------------------- */

/* The token's routing fields as a JSON object of integers; CR_EINVALID when not routable. */
CR_API int cr_token_decode(char **out, const char *token, size_t token_len);
/* Mints a token as GitLab's Rails does. random: 16 bytes, or NULL for a secure source. */
CR_API int cr_token_encode(char **out, const char *prefix, const char *const *keys,
                           const int64_t *values, size_t count, const uint8_t *random);

#ifdef __cplusplus
}
#endif

#endif /* CELLROUTE_H */
