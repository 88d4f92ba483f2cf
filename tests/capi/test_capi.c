/* The whole C API from plain C. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#include "cellroute.h"

static int failures = 0, checks = 0;
#define CHECK(cond)                                                   \
  do {                                                                \
    ++checks;                                                         \
    if (!(cond)) {                                                    \
      ++failures;                                                     \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                 \
  } while (0)

static cr_request Request(const char *method, const char *path, const cr_header *headers,
                          size_t count) {
  cr_request r = CR_REQUEST_INIT;
  r.method = method;
  r.method_len = strlen(method);
  r.path = path;
  r.path_len = strlen(path);
  r.headers = headers;
  r.header_count = count;
  return r;
}

static cr_header Header(const char *name, const char *value) {
  cr_header h;
  h.name = name;
  h.name_len = strlen(name);
  h.value = value;
  h.value_len = strlen(value);
  return h;
}

static int async_calls = 0;
static long long async_cell = -1;
static void OnDecision(const cr_decision *d, void *payload) {
  ++async_calls;
  async_cell = (long long)cr_decision_cell_id(d);
  CHECK(payload == (void *)&async_calls);
}

/* A callback that routes asynchronously again from inside: the inner decision must not be
 * the outer one, which still reads as it did after the inner call. */
static const cr_router *nested_router;
static int nested_ok = 0;
static void OnInner(const cr_decision *d, void *payload) {
  *(const cr_decision **)payload = d;
  CHECK(cr_decision_cell_id(d) == 2);
}
static void OnOuter(const cr_decision *d, void *payload) {
  const cr_decision *inner = NULL;
  cr_header h = {"Cookie", 6, "_gitlab_session=cell-2-x", 24};
  cr_request r = CR_REQUEST_INIT;
  (void)payload;
  r.path = "/dashboard";
  r.path_len = 10;
  r.headers = &h;
  r.header_count = 1;
  CHECK(cr_router_route_async(nested_router, &r, OnInner, &inner) == CR_OK);
  nested_ok = inner != NULL && inner != d && cr_decision_cell_id(d) == 1 &&
              strcmp(cr_decision_rule(d), "fallback") == 0;
}

/* Events, recorded on cellroute's event thread and read after cr_router_free, which returns
 * only when every queued event has been delivered. */
static char event_names[8][32];
static char event_json[8][4096];
static int event_count = 0, event_payload_wrong = 0;
static void OnEvent(const char *name, const char *json, void *payload) {
  /* (No CHECK here: this is another thread, and CHECK counts into shared variables.) */
  if (payload != (void *)&event_count) event_payload_wrong = 1;
  if (event_count < 8) {
    snprintf(event_names[event_count], sizeof event_names[0], "%s", name);
    snprintf(event_json[event_count], sizeof event_json[0], "%s", json);
  }
  ++event_count;
}

int main(void) {
  cr_router *router = NULL;
  cr_decision *d = NULL;
  cr_options *opts = NULL;
  char *json = NULL;
  char version[32];

  sprintf(version, "%d.%d.%d", CR_VERSION_MAJOR, CR_VERSION_MINOR, CR_VERSION_PATCH);
  CHECK(strcmp(cr_version(), version) == 0);
  CHECK(cr_error_last() != NULL);

  /* NULL handling: codes, messages, frees that accept NULL. */
  CHECK(cr_router_new(NULL, NULL) == CR_EINVALID);
  CHECK(strstr(cr_error_last()->message, "out") != NULL);
  cr_router_free(NULL);
  cr_decision_free(NULL);
  cr_options_free(NULL);
  cr_string_free(NULL);

  /* Defaults. */
  CHECK(cr_router_new(&router, NULL) == CR_OK);
  CHECK(cr_error_last()->code == CR_OK);
  CHECK(strcmp(cr_error_last()->message, "") == 0);
  CHECK(cr_decision_new(&d) == CR_OK);
  {
    cr_request r = Request("GET", "/gitlab-org/gitlab", NULL, 0);
    CHECK(cr_router_route(d, router, &r) == CR_OK);
    CHECK(cr_decision_result(d) == CR_RESULT_MATCHED);
    CHECK(strcmp(cr_decision_rule(d), "top_level_namespace") == 0);
    CHECK(strcmp(cr_decision_action(d), "classify") == 0);
    CHECK(strcmp(cr_decision_type(d), "route") == 0);
    CHECK(strcmp(cr_decision_value(d), "gitlab-org") == 0);
    CHECK(cr_decision_cell_id(d) == 2);
    CHECK(strcmp(cr_decision_address(d), "cell-2.gitlab.example.com:443") == 0);
    CHECK(strcmp(cr_decision_source(d), "claims_file") == 0);
    CHECK(strcmp(cr_decision_fallback(d), "") == 0);
    CHECK(cr_decision_json(&json, d) == CR_OK);
    CHECK(strstr(json, "\"route\":\"gitlab-org\"") != NULL);
    cr_string_free(json);
    /* Not recording the variables: the same decision, and none shown. */
    CHECK(cr_decision_record_variables(NULL, 0) == CR_EINVALID);
    CHECK(cr_decision_record_variables(d, 0) == CR_OK);
    CHECK(cr_router_route(d, router, &r) == CR_OK);
    CHECK(strcmp(cr_decision_value(d), "gitlab-org") == 0);
    CHECK(cr_decision_cell_id(d) == 2);
    CHECK(cr_decision_json(&json, d) == CR_OK);
    CHECK(strstr(json, "\"variables\":{}") != NULL);
    CHECK(strstr(json, "\"value\":\"gitlab-org\"") != NULL);
    cr_string_free(json);
    CHECK(cr_router_route_wait(d, router, &r, 10) == CR_OK); /* kept by route_wait too */
    CHECK(cr_decision_json(&json, d) == CR_OK);
    CHECK(strstr(json, "\"variables\":{}") != NULL);
    cr_string_free(json);
    CHECK(cr_decision_record_variables(d, 1) == CR_OK);
    CHECK(cr_router_route(d, router, &r) == CR_OK);
    CHECK(cr_decision_json(&json, d) == CR_OK);
    CHECK(strstr(json, "\"route\":\"gitlab-org\"") != NULL);
    cr_string_free(json);
  }
  {
    cr_header h[2];
    cr_request r;
    h[0] = Header("Accept", "*/*");
    h[1] = Header("Cookie", "a=b; _gitlab_session=cell-3-abcdef");
    r = Request("GET", "/dashboard", h, 2);
    CHECK(cr_router_route(d, router, &r) == CR_OK);
    CHECK(cr_decision_cell_id(d) == 3);
    CHECK(strcmp(cr_decision_type(d), "SESSION_PREFIX") == 0);
    /* A corrupt token: rejected, no cell. */
    h[1] = Header("Private-Token", "glpat-AAECAwQFBgcICQoLDA0OD2M6MwpvOjEKdToxNgw.01.zz1k987wi");
    r = Request("GET", "/api/v4/user", h, 2);
    CHECK(cr_router_route(d, router, &r) == CR_OK);
    CHECK(cr_decision_result(d) == CR_RESULT_REJECTED);
    CHECK(cr_decision_cell_id(d) == 0);
    CHECK(strstr(cr_decision_reason(d), "routable token") != NULL);
  }
  {
    /* A struct from an older or broken caller is refused, not misread. */
    cr_request r = Request("GET", "/", NULL, 0);
    r.size = 8;
    CHECK(cr_router_route(d, router, &r) == CR_EINVALID);
    CHECK(strstr(cr_error_last()->message, "CR_REQUEST_INIT") != NULL);
  }
  {
    /* A batch. */
    cr_request rs[3];
    cr_decision *ds[3] = {NULL, NULL, NULL};
    int i;
    rs[0] = Request("GET", "/o/acme-corp/x", NULL, 0);
    rs[1] = Request("GET", "/users/sign_in", NULL, 0);
    rs[2] = Request("GET", "/acme/x", NULL, 0);
    for (i = 0; i < 3; ++i) CHECK(cr_decision_new(&ds[i]) == CR_OK);
    CHECK(cr_router_route_batch(ds, router, rs, 3) == CR_OK);
    CHECK(cr_decision_cell_id(ds[0]) == 3);
    CHECK(cr_decision_cell_id(ds[1]) == 1);
    CHECK(strcmp(cr_decision_rule(ds[1]), "fallback") == 0);
    CHECK(cr_decision_cell_id(ds[2]) == 3);
    for (i = 0; i < 3; ++i) cr_decision_free(ds[i]);
  }
  {
    /* Explain, status, async (nothing pending: at once). */
    cr_request r = Request("GET", "/unknown-group/x", NULL, 0);
    CHECK(cr_router_explain(&json, router, &r) == CR_OK);
    CHECK(strstr(json, "no cell owns route 'unknown-group'") != NULL);
    cr_string_free(json);
    CHECK(cr_router_status(&json, router) == CR_OK);
    CHECK(strcmp(json, "{\"state\":\"static\"}") == 0);
    cr_string_free(json);
    CHECK(cr_router_route_async(router, &r, OnDecision, &async_calls) == CR_OK);
    CHECK(async_calls == 1);
    CHECK(async_cell == 1);
    nested_router = router;
    CHECK(cr_router_route_async(router, &r, OnOuter, NULL) == CR_OK);
    CHECK(nested_ok);
    CHECK(cr_router_route_wait(d, router, &r, 10) == CR_OK);
    CHECK(cr_decision_cell_id(d) == 1);
  }
  cr_router_free(router);
  router = NULL;

  /* Options: bad rules are refused with the rule and field named. */
  CHECK(cr_options_new(&opts) == CR_OK);
  {
    const char *bad = "[{\"id\": \"r1\", \"action\": \"route\"}]";
    CHECK(cr_options_set_rules_text(opts, bad, strlen(bad)) == CR_OK);
    CHECK(cr_router_new(&router, opts) == CR_EINVALID);
    CHECK(router == NULL);
    CHECK(strstr(cr_error_last()->message, "rule 'r1' (#1): action") != NULL);
  }
  {
    const char *rules = "[{\"id\": \"all\", \"action\": \"classify\", "
                        "\"classify\": {\"type\": \"CELL_ID\", \"value\": \"7\"}}]";
    const char *topo = "[[cells]]\nid = 1\naddress = \"one:1\"\n[[cells]]\nid = 7\naddress = \"seven:1\"\n";
    cr_request r = Request("GET", "/", NULL, 0);
    CHECK(cr_options_set_rules_text(opts, rules, strlen(rules)) == CR_OK);
    CHECK(cr_options_set_topology_text(opts, topo, strlen(topo)) == CR_OK);
    CHECK(cr_router_new(&router, opts) == CR_OK);
    cr_options_free(opts); /* the router keeps a copy */
    CHECK(cr_router_route(d, router, &r) == CR_OK);
    CHECK(strcmp(cr_decision_address(d), "seven:1") == 0);
    cr_router_free(router);
  }
  /* Metrics count what was routed; a reload swaps the rules, a bad one changes nothing. */
  {
    const char *seven = "[{\"id\": \"to-seven\", \"action\": \"classify\", "
                        "\"classify\": {\"type\": \"CELL_ID\", \"value\": \"7\"}}]";
    const char *one = "[{\"id\": \"to-one\", \"action\": \"classify\", "
                      "\"classify\": {\"type\": \"CELL_ID\", \"value\": \"1\"}}]";
    const char *broken = "[{\"id\": \"to-one\",\n \"action\" \"classify\"}]"; /* no colon */
    const char *topo = "[[cells]]\nid = 1\naddress = \"one:1\"\n[[cells]]\nid = 7\naddress = \"seven:1\"\n";
    cr_request r = Request("GET", "/", NULL, 0);
    int i;
    CHECK(cr_options_new(&opts) == CR_OK);
    CHECK(cr_options_set_rules_text(opts, seven, strlen(seven)) == CR_OK);
    CHECK(cr_options_set_topology_text(opts, topo, strlen(topo)) == CR_OK);
    CHECK(cr_options_set_event_callback(opts, OnEvent, &event_count) == CR_OK);
    CHECK(cr_router_new(&router, opts) == CR_OK);
    for (i = 0; i < 3; ++i) CHECK(cr_router_route(d, router, &r) == CR_OK);
    CHECK(cr_router_metrics(&json, router) == CR_OK);
    CHECK(strstr(json, "cellroute_decisions_total{rule=\"to-seven\",action=\"classify\","
                       "type=\"CELL_ID\",source=\"cell_list\",fallback=\"none\"} 3\n") != NULL);
    CHECK(strstr(json, "# TYPE cellroute_route_duration_seconds histogram") != NULL);
    cr_string_free(json);

    CHECK(cr_options_set_rules_text(opts, one, strlen(one)) == CR_OK);
    CHECK(cr_router_reload(router, opts) == CR_OK);
    CHECK(cr_router_route(d, router, &r) == CR_OK);
    CHECK(strcmp(cr_decision_address(d), "one:1") == 0);

    CHECK(cr_options_set_rules_text(opts, broken, strlen(broken)) == CR_OK);
    CHECK(cr_router_reload(router, opts) == CR_EINVALID);
    CHECK(strstr(cr_error_last()->message, "<rules>:2:") != NULL);
    CHECK(cr_router_route(d, router, &r) == CR_OK);
    CHECK(strcmp(cr_decision_address(d), "one:1") == 0); /* unchanged */
    CHECK(cr_router_metrics(&json, router) == CR_OK);
    CHECK(strstr(json, "rule=\"to-seven\"") != NULL); /* counts survive the reload */
    CHECK(strstr(json, "cellroute_reloads_total{result=\"success\"} 1\n") != NULL);
    CHECK(strstr(json, "cellroute_reloads_total{result=\"failure\"} 1\n") != NULL);
    cr_string_free(json);
    CHECK(cr_router_reload(NULL, opts) == CR_EINVALID);
    cr_options_free(opts);
    cr_router_free(router);
    /* Both reloads, delivered before cr_router_free returned. */
    CHECK(event_count == 2);
    CHECK(!event_payload_wrong);
    CHECK(strcmp(event_names[0], "reload_succeeded") == 0);
    CHECK(strstr(event_json[0], "\"event\":\"reload_succeeded\"") != NULL);
    CHECK(strcmp(event_names[1], "reload_failed") == 0);
    CHECK(strstr(event_json[1], "\"code\":\"invalid\"") != NULL);
    CHECK(strstr(event_json[1], "<rules>:2:") != NULL);
    CHECK(cr_options_set_event_callback(NULL, OnEvent, NULL) == CR_EINVALID);
  }
  CHECK(cr_options_new(&opts) == CR_OK);
  CHECK(cr_options_set_ms(opts, "nonsense", 5) == CR_EINVALID);
  CHECK(cr_options_set_ms(opts, "poll", 0) == CR_EINVALID);
  CHECK(cr_options_set_ms(opts, "stop", 500) == CR_OK);
  CHECK(cr_options_set_limit(opts, "max_pending", 100) == CR_OK);
  CHECK(cr_options_set_limit(opts, "max_cached_entries", 1000) == CR_OK);
  CHECK(cr_options_set_limit(opts, "max_response_bytes", 1 << 20) == CR_OK);
  CHECK(cr_options_set_limit(opts, "max_response_bytes", 10) == CR_EINVALID);
  CHECK(cr_options_set_limit(opts, "max_pending", 0) == CR_EINVALID);
  CHECK(cr_options_set_limit(opts, "nonsense", 5) == CR_EINVALID);
  CHECK(strstr(cr_error_last()->message, "max_pending") != NULL);
  CHECK(cr_options_set_rules_file(opts, "/nonexistent/rules.json") == CR_OK);
  CHECK(cr_router_new(&router, opts) == CR_EUNAVAILABLE);
  CHECK(strstr(cr_error_last()->message, "/nonexistent/rules.json") != NULL);
  cr_options_free(opts);

  /* A Topology Service that cannot be reached: the given topology serves, a claim is pending,
   * the async callback still comes (with the legacy cell), and the status says why. */
  {
    const char *topo = "[[cells]]\nid = 1\naddress = \"one:1\"\n[[cells]]\nid = 2\naddress = \"two:1\"\n";
    cr_request r = Request("GET", "/some-group/x", NULL, 0);
    int i;
    CHECK(cr_options_new(&opts) == CR_OK);
    CHECK(cr_options_set_topology_text(opts, topo, strlen(topo)) == CR_OK);
    CHECK(cr_options_set_topology_service(opts, "127.0.0.1:1") == CR_OK);
    CHECK(cr_options_add_metadata(opts, "x-client", "capi-test") == CR_OK);
    CHECK(cr_options_set_snapshot_path(opts, "/nonexistent-dir/snapshot.toml") == CR_OK);
    CHECK(cr_options_set_ms(opts, "call", 200) == CR_OK);
    CHECK(cr_options_set_ms(opts, "classify", 100) == CR_OK);
    CHECK(cr_options_set_ms(opts, "poll", 60000) == CR_OK);
    CHECK(cr_router_new(&router, opts) == CR_OK);
    CHECK(cr_router_status(&json, router) == CR_OK);
    CHECK(strstr(json, "\"state\":\"serving_stale\"") != NULL);
    CHECK(strstr(json, "\"topology_source\":\"static\"") != NULL);
    cr_string_free(json);
    CHECK(cr_router_route(d, router, &r) == CR_OK);
    CHECK(strcmp(cr_decision_fallback(d), "pending") == 0);
    CHECK(cr_decision_cell_id(d) == 1);
    async_calls = 0;
    async_cell = -1;
    CHECK(cr_router_route_async(router, &r, OnDecision, &async_calls) == CR_OK);
    for (i = 0; i < 500 && async_calls == 0; ++i) {
      struct timespec ten_ms = {0, 10000000};
      nanosleep(&ten_ms, NULL);
    }
    CHECK(async_calls == 1);
    CHECK(async_cell == 1);
    CHECK(cr_router_route_wait(d, router, &r, 300) == CR_OK);
    CHECK(cr_decision_cell_id(d) == 1);
    CHECK(strcmp(cr_decision_fallback(d), "pending") != 0);
    CHECK(cr_router_after_fork(router) == CR_OK); /* same process: nothing to do */
    cr_router_free(router);
    /* TLS options with an unreadable CA are refused when the router is built. */
    CHECK(cr_options_set_tls(opts, "/nonexistent/ca.pem", NULL, NULL, NULL) == CR_OK);
    CHECK(cr_router_new(&router, opts) == CR_EINVALID);
    CHECK(strstr(cr_error_last()->message, "ca_file") != NULL);
    cr_options_free(opts);
  }

  /* Safe to embed: a decision owns what it shows after its router is freed; a fresh decision
   * reads as empty; empty configuration text is an error, not the defaults; a router freed with
   * async work pending runs each callback once before cr_router_free returns. */
  {
    cr_decision *kept = NULL;
    cr_request r = Request("GET", "/gitlab-org/gitlab", NULL, 0);
    char *churn[64];
    int i;
    CHECK(cr_decision_new(&kept) == CR_OK);
    CHECK(strcmp(cr_decision_rule(kept), "") == 0);
    CHECK(strcmp(cr_decision_address(kept), "") == 0);
    {
      /* NULL with length 0 is an empty string everywhere, headers included. */
      cr_header empty[1];
      cr_request blank = CR_REQUEST_INIT;
      empty[0].name = NULL;
      empty[0].name_len = 0;
      empty[0].value = NULL;
      empty[0].value_len = 0;
      blank.headers = empty;
      blank.header_count = 1;
      CHECK(cr_router_new(&router, NULL) == CR_OK);
      CHECK(cr_router_route(kept, router, &blank) == CR_OK);
      CHECK(cr_decision_result(kept) == CR_RESULT_MATCHED || cr_decision_result(kept) == CR_RESULT_NO_MATCH);
      cr_router_free(router);
    }
    CHECK(cr_router_new(&router, NULL) == CR_OK);
    CHECK(cr_router_route(kept, router, &r) == CR_OK);
    cr_router_free(router);
    for (i = 0; i < 64; ++i) {
      churn[i] = malloc(4096);
      memset(churn[i], 'Z', 4096);
    }
    CHECK(strcmp(cr_decision_rule(kept), "top_level_namespace") == 0);
    CHECK(strcmp(cr_decision_value(kept), "gitlab-org") == 0);
    CHECK(cr_decision_cell_id(kept) == 2);
    for (i = 0; i < 64; ++i) free(churn[i]);
    cr_decision_free(kept);

    CHECK(cr_options_new(&opts) == CR_OK);
    CHECK(cr_options_set_rules_text(opts, "", 0) == CR_OK);
    CHECK(cr_router_new(&router, opts) == CR_EINVALID);
    CHECK(strstr(cr_error_last()->message, "empty rules") != NULL);
    CHECK(cr_options_set_rules_text(opts, "[]", 2) == CR_OK);
    CHECK(cr_options_set_claims_text(opts, "", 0) == CR_OK);
    CHECK(cr_router_new(&router, opts) == CR_EINVALID);
    CHECK(cr_options_set_rules_file(opts, "") == CR_EINVALID);
    cr_options_free(opts);
  }
  {
    const char *topo = "[[cells]]\nid = 1\naddress = \"one:1\"\n";
    int i;
    CHECK(cr_options_new(&opts) == CR_OK);
    CHECK(cr_options_set_topology_text(opts, topo, strlen(topo)) == CR_OK);
    CHECK(cr_options_set_topology_service(opts, "127.0.0.1:1") == CR_OK);
    CHECK(cr_options_set_ms(opts, "call", 100) == CR_OK);
    CHECK(cr_options_set_ms(opts, "classify", 1000) == CR_OK);
    CHECK(cr_router_new(&router, opts) == CR_OK);
    async_calls = 0;
    for (i = 0; i < 10; ++i) {
      char path[32];
      cr_request r;
      sprintf(path, "/pending-%d/x", i);
      r = Request("GET", path, NULL, 0);
      CHECK(cr_router_route_async(router, &r, OnDecision, &async_calls) == CR_OK);
    }
    cr_router_free(router); /* before the fetches end: no abort, callbacks now */
    CHECK(async_calls == 10);
    cr_options_free(opts);
  }

  /* Tokens. */
  {
    const char *example = "EL25d_AKXDUtqLnIQHEpkG86MQM.01.0r1ajj2i3";
    const char *keys[2] = {"c", "o"};
    int64_t values[2] = {2, 1};
    uint8_t random[16];
    char *token = NULL;
    int i;
    CHECK(cr_token_decode(&json, example, strlen(example)) == CR_OK);
    CHECK(strcmp(json, "{\"o\":1}") == 0);
    cr_string_free(json);
    CHECK(cr_token_decode(&json, "glpat-nope", 10) == CR_EINVALID);
    CHECK(json == NULL);
    CHECK(strstr(cr_error_last()->message, "not routable") != NULL);
    for (i = 0; i < 16; ++i) random[i] = (uint8_t)i;
    CHECK(cr_token_encode(&token, "glrt-", keys, values, 2, random) == CR_OK);
    CHECK(strncmp(token, "glrt-", 5) == 0);
    CHECK(cr_token_decode(&json, token, strlen(token)) == CR_OK);
    CHECK(strcmp(json, "{\"c\":2,\"o\":1}") == 0);
    cr_string_free(json);
    cr_string_free(token);
    /* As Rails: only the routing keys, and c or o among them. */
    {
      const char *bad[1] = {"\xff"};
      const char *no_owner[1] = {"p"};
      CHECK(cr_token_encode(&token, "glpat-", bad, values, 1, random) == CR_EINVALID);
      CHECK(strstr(cr_error_last()->message, "Invalid routing keys") != NULL);
      CHECK(cr_token_encode(&token, "glpat-", no_owner, values, 1, random) == CR_EINVALID);
      CHECK(strstr(cr_error_last()->message, "At least one routing key") != NULL);
    }
  }
  cr_decision_free(d);

  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures != 0;
}
