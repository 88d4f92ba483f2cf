/*
 * ngx_http_cellroute_module: sends each request to the cell that owns it, through cellroute's
 * stable C API (capi/include/cellroute.h) and nothing else. docs/nginx.md is the operator's
 * guide; this comment is the design.
 *
 * Configuration time (the master, and `nginx -t`). The module builds a router from the files,
 * without the Topology Service: that validates them, so a broken ruleset fails the
 * configuration with its file:line:col, and it is the router workers inherit. A router without
 * a service survives fork as it is; gRPC does not, so with `cellroute_topology_service` every
 * worker builds its own router after fork (init_process) and, if that fails, routes from the
 * inherited one and says so in the error log. `nginx -s reload` parses the files again and
 * starts new workers with them while the old ones finish their requests.
 *
 * A request (preaccess phase, main requests, `cellroute on`). Without a service the module
 * routes at once (cr_router_route never waits). With one, a request whose claim the table
 * lacks must not block the event loop: cr_router_route_async calls back at once when nothing
 * is pending, else later on a cellroute thread, which hands the decision to this worker's
 * event loop through a pipe. The request is parked meanwhile, with a timer of cellroute_wait;
 * whichever comes first decides (the timer by routing again without waiting), and the other
 * finds the request gone and only frees what it holds. A rejected request (a corrupt token) is
 * answered 400 and never reaches a cell. The decision's strings are copied into the request's
 * pool, so the $cellroute_* variables stay valid for the request's life (the log phase too).
 *
 * Events (sync failed, topology changed, ...) arrive on a cellroute thread too and take the
 * same pipe to the error log, bounded: past 1024 waiting, they are counted and the count is
 * logged instead.
 */
#include <cellroute.h>
#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <pthread.h>

#define NGX_HTTP_CELLROUTE_MAX_EVENTS 1024
#define NGX_HTTP_CELLROUTE_STACK_HEADERS 64

/* The decision's strings a variable can show; the cell id is formatted once, when copied. */
enum {
  CR_NGX_CELL_ID, /* "" when there is no cell */
  CR_NGX_ADDRESS,
  CR_NGX_RULE,
  CR_NGX_ACTION,
  CR_NGX_TYPE,
  CR_NGX_SOURCE,
  CR_NGX_FALLBACK,
  CR_NGX_REASON,
  CR_NGX_FIELDS
};

typedef struct {
  int result; /* CR_RESULT_* */
  ngx_str_t field[CR_NGX_FIELDS];
} ngx_http_cellroute_result_t;

typedef struct {
  ngx_str_t rules;
  ngx_str_t topology;
  ngx_str_t claims;
  ngx_str_t service;
  ngx_str_t tls_ca;
  ngx_str_t tls_cert;
  ngx_str_t tls_key;
  ngx_str_t tls_server_name;
  ngx_str_t snapshot;
  ngx_array_t *metadata; /* ngx_keyval_t */
  ngx_msec_t wait;
  cr_router *router; /* built at configuration time, without the service */
} ngx_http_cellroute_main_conf_t;

typedef struct {
  ngx_flag_t enable;
} ngx_http_cellroute_loc_conf_t;

typedef struct ngx_http_cellroute_item_s ngx_http_cellroute_item_t;

/* A request's answer from cr_router_route_async, or an event for the log. Allocated with
 * malloc: a late answer may arrive after its request is gone. */
struct ngx_http_cellroute_item_s {
  ngx_http_cellroute_item_t *next;
  int is_event;
  /* Touched on the event loop only. */
  ngx_http_request_t *request;       /* NULL once the request no longer waits for this answer */
  ngx_pool_cleanup_t *cleanup;       /* in the request's pool once parked: forgets this item */
  ngx_http_cellroute_result_t *sink; /* where an answer given inside the call goes */
  pthread_t loop;
  int in_call; /* the loop is inside cr_router_route_async */
  int answered_in_call;
  /* Written by the callback, read by the loop after the queue's lock (or inside the call). */
  ngx_http_cellroute_result_t result;
  u_char *strings;  /* the result's strings, or the event's JSON line */
  int failed;       /* out of memory in the callback */
  ngx_uint_t level; /* an event's log level */
};

typedef enum {
  NGX_HTTP_CELLROUTE_DECIDED = 0,
  NGX_HTTP_CELLROUTE_WAITING
} ngx_http_cellroute_state_e;

typedef struct {
  ngx_http_cellroute_state_e state;
  ngx_http_cellroute_result_t result;
  ngx_http_cellroute_item_t *item; /* while waiting */
} ngx_http_cellroute_ctx_t;

/* This worker's router and the pipe from cellroute's threads to its event loop. */
typedef struct {
  cr_router *own;          /* built after fork when a service is configured */
  const cr_router *router; /* the one requests use */
  cr_decision *decision;   /* reused by every synchronous decision */
  ngx_connection_t *notify;
  int notify_write;
  pthread_mutex_t lock;
  ngx_http_cellroute_item_t *head;
  ngx_http_cellroute_item_t **tail;
  ngx_uint_t events_queued;
  ngx_uint_t events_dropped;
  int use_async;
  /* An item answered inside the call is kept for the next request: the common path
   * allocates nothing. */
  ngx_http_cellroute_item_t *spare;
} ngx_http_cellroute_worker_t;

static ngx_http_cellroute_worker_t ngx_http_cellroute_worker = {
    NULL, NULL, NULL, NULL, -1, PTHREAD_MUTEX_INITIALIZER, NULL, NULL, 0, 0, 0, NULL};

static ngx_int_t ngx_http_cellroute_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_cellroute_init(ngx_conf_t *cf);
static void *ngx_http_cellroute_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_cellroute_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_cellroute_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_cellroute_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child);
static char *ngx_http_cellroute_set_path(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_http_cellroute_tls(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_http_cellroute_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_cellroute_init_process(ngx_cycle_t *cycle);
static void ngx_http_cellroute_exit_process(ngx_cycle_t *cycle);
static void ngx_http_cellroute_wake(ngx_http_request_t *r);

static ngx_command_t ngx_http_cellroute_commands[] = {
    {ngx_string("cellroute_rules"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
     ngx_http_cellroute_set_path, NGX_HTTP_MAIN_CONF_OFFSET,
     offsetof(ngx_http_cellroute_main_conf_t, rules), NULL},
    {ngx_string("cellroute_topology"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
     ngx_http_cellroute_set_path, NGX_HTTP_MAIN_CONF_OFFSET,
     offsetof(ngx_http_cellroute_main_conf_t, topology), NULL},
    {ngx_string("cellroute_claims"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
     ngx_http_cellroute_set_path, NGX_HTTP_MAIN_CONF_OFFSET,
     offsetof(ngx_http_cellroute_main_conf_t, claims), NULL},
    {ngx_string("cellroute_snapshot"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
     ngx_http_cellroute_set_path, NGX_HTTP_MAIN_CONF_OFFSET,
     offsetof(ngx_http_cellroute_main_conf_t, snapshot), NULL},
    {ngx_string("cellroute_topology_service"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
     ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
     offsetof(ngx_http_cellroute_main_conf_t, service), NULL},
    {ngx_string("cellroute_tls"), NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE, ngx_http_cellroute_tls,
     NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL},
    {ngx_string("cellroute_metadata"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE2,
     ngx_conf_set_keyval_slot, NGX_HTTP_MAIN_CONF_OFFSET,
     offsetof(ngx_http_cellroute_main_conf_t, metadata), NULL},
    {ngx_string("cellroute_wait"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, ngx_conf_set_msec_slot,
     NGX_HTTP_MAIN_CONF_OFFSET, offsetof(ngx_http_cellroute_main_conf_t, wait), NULL},
    {ngx_string("cellroute"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_FLAG,
     ngx_conf_set_flag_slot, NGX_HTTP_LOC_CONF_OFFSET,
     offsetof(ngx_http_cellroute_loc_conf_t, enable), NULL},
    {ngx_string("cellroute_status"), NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS, ngx_http_cellroute_status,
     0, 0, NULL},
    ngx_null_command};

static ngx_http_module_t ngx_http_cellroute_module_ctx = {
    ngx_http_cellroute_add_variables,    /* preconfiguration */
    ngx_http_cellroute_init,             /* postconfiguration */
    ngx_http_cellroute_create_main_conf, /* create main configuration */
    ngx_http_cellroute_init_main_conf,   /* init main configuration */
    NULL,                                /* create server configuration */
    NULL,                                /* merge server configuration */
    ngx_http_cellroute_create_loc_conf,  /* create location configuration */
    ngx_http_cellroute_merge_loc_conf    /* merge location configuration */
};

ngx_module_t ngx_http_cellroute_module = {NGX_MODULE_V1,
                                          &ngx_http_cellroute_module_ctx,
                                          ngx_http_cellroute_commands,
                                          NGX_HTTP_MODULE,
                                          NULL,                            /* init master */
                                          NULL,                            /* init module */
                                          ngx_http_cellroute_init_process, /* init process */
                                          NULL,                            /* init thread */
                                          NULL,                            /* exit thread */
                                          ngx_http_cellroute_exit_process, /* exit process */
                                          NULL,                            /* exit master */
                                          NGX_MODULE_V1_PADDING};

/* ---- decisions ---------------------------------------------------------------------------- */

/* A string field of d (not the cell id). */
static const char *ngx_http_cellroute_decision_field(const cr_decision *d, ngx_uint_t i) {
  switch (i) {
    case CR_NGX_ADDRESS:
      return cr_decision_address(d);
    case CR_NGX_RULE:
      return cr_decision_rule(d);
    case CR_NGX_ACTION:
      return cr_decision_action(d);
    case CR_NGX_TYPE:
      return cr_decision_type(d);
    case CR_NGX_SOURCE:
      return cr_decision_source(d);
    case CR_NGX_FALLBACK:
      return cr_decision_fallback(d);
    default:
      return cr_decision_reason(d);
  }
}

/* Copies d into out, its strings into one block from pool (or malloc when pool is NULL, which
 * the caller frees through *block). NGX_ERROR when out of memory. */
static ngx_int_t ngx_http_cellroute_result_set(ngx_http_cellroute_result_t *out,
                                               const cr_decision *d, ngx_pool_t *pool,
                                               u_char **block) {
  size_t len[CR_NGX_FIELDS], total = NGX_INT64_LEN;
  const char *s[CR_NGX_FIELDS];
  int64_t cell_id = cr_decision_cell_id(d);
  ngx_uint_t i;
  u_char *p;

  for (i = CR_NGX_CELL_ID + 1; i < CR_NGX_FIELDS; i++) {
    s[i] = ngx_http_cellroute_decision_field(d, i);
    len[i] = ngx_strlen(s[i]);
    total += len[i];
  }
  p = pool != NULL ? ngx_pnalloc(pool, total) : malloc(total);
  if (p == NULL) {
    return NGX_ERROR;
  }
  if (block != NULL) {
    *block = p;
  }
  out->result = cr_decision_result(d);
  out->field[CR_NGX_CELL_ID].data = p;
  p = cell_id != 0 ? ngx_sprintf(p, "%L", cell_id) : p; /* 0: no cell */
  out->field[CR_NGX_CELL_ID].len = p - out->field[CR_NGX_CELL_ID].data;
  for (i = CR_NGX_CELL_ID + 1; i < CR_NGX_FIELDS; i++) {
    out->field[i].data = p;
    out->field[i].len = len[i];
    p = ngx_cpymem(p, s[i], len[i]);
  }
  return NGX_OK;
}

/* Copies src (its strings in one block) into dst, the strings into pool. */
static ngx_int_t ngx_http_cellroute_result_copy(ngx_http_cellroute_result_t *dst,
                                                const ngx_http_cellroute_result_t *src,
                                                ngx_pool_t *pool) {
  size_t total = 0;
  ngx_uint_t i;
  u_char *p;

  for (i = 0; i < CR_NGX_FIELDS; i++) {
    total += src->field[i].len;
  }
  p = ngx_pnalloc(pool, total + 1);
  if (p == NULL) {
    return NGX_ERROR;
  }
  dst->result = src->result;
  for (i = 0; i < CR_NGX_FIELDS; i++) {
    dst->field[i].data = p;
    dst->field[i].len = src->field[i].len;
    p = ngx_cpymem(p, src->field[i].data, src->field[i].len);
  }
  return NGX_OK;
}

/* The request as cellroute sees it: views of nginx's memory. The path is the one the client
 * sent (percent-encoding kept, as GitLab's router sees it), without the query. */
static ngx_int_t ngx_http_cellroute_request(ngx_http_request_t *r, cr_request *req,
                                            cr_header *stack, ngx_uint_t stack_len) {
  ngx_list_part_t *part;
  ngx_table_elt_t *h;
  ngx_uint_t i, n = 0;
  cr_header *headers = stack;
  u_char *q;

  for (part = &r->headers_in.headers.part; part != NULL; part = part->next) {
    n += part->nelts;
  }
  if (n > stack_len) {
    headers = ngx_palloc(r->pool, n * sizeof(cr_header));
    if (headers == NULL) {
      return NGX_ERROR;
    }
  }
  n = 0;
  for (part = &r->headers_in.headers.part; part != NULL; part = part->next) {
    h = part->elts;
    for (i = 0; i < part->nelts; i++) {
      headers[n].name = (const char *)h[i].key.data;
      headers[n].name_len = h[i].key.len;
      headers[n].value = (const char *)h[i].value.data;
      headers[n].value_len = h[i].value.len;
      n++;
    }
  }

  req->method = (const char *)r->method_name.data;
  req->method_len = r->method_name.len;
  req->host = (const char *)r->headers_in.server.data;
  req->host_len = r->headers_in.server.len;
  if (r->unparsed_uri.len > 0 && r->unparsed_uri.data[0] == '/') {
    q = ngx_strlchr(r->unparsed_uri.data, r->unparsed_uri.data + r->unparsed_uri.len, '?');
    req->path = (const char *)r->unparsed_uri.data;
    req->path_len = (q ? q : r->unparsed_uri.data + r->unparsed_uri.len) - r->unparsed_uri.data;
  } else {
    req->path = (const char *)r->uri.data; /* absolute-form request line */
    req->path_len = r->uri.len;
  }
  req->query = (const char *)r->args.data;
  req->query_len = r->args.len;
  req->headers = headers;
  req->header_count = n;
  return NGX_OK;
}

/* The worker's decision. It records no variables: no $cellroute_ variable shows them, and
 * routing without them costs less. */
static int ngx_http_cellroute_new_decision(cr_decision **out) {
  if (cr_decision_new(out) != CR_OK) return 0;
  if (cr_decision_record_variables(*out, 0) != CR_OK) {
    cr_decision_free(*out);
    *out = NULL;
    return 0;
  }
  return 1;
}

/* Decides now, without waiting, into ctx. */
static ngx_int_t ngx_http_cellroute_decide(ngx_http_request_t *r, ngx_http_cellroute_ctx_t *ctx) {
  ngx_http_cellroute_worker_t *w = &ngx_http_cellroute_worker;
  cr_header stack[NGX_HTTP_CELLROUTE_STACK_HEADERS];
  cr_request req = CR_REQUEST_INIT;

  if (w->decision == NULL && !ngx_http_cellroute_new_decision(&w->decision)) {
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "cellroute: %s", cr_error_last()->message);
    return NGX_ERROR;
  }
  if (ngx_http_cellroute_request(r, &req, stack, NGX_HTTP_CELLROUTE_STACK_HEADERS) != NGX_OK ||
      cr_router_route(w->decision, w->router, &req) != CR_OK) {
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "cellroute: %s", cr_error_last()->message);
    return NGX_ERROR;
  }
  ctx->state = NGX_HTTP_CELLROUTE_DECIDED;
  return ngx_http_cellroute_result_set(&ctx->result, w->decision, r->pool, NULL);
}

static ngx_http_cellroute_ctx_t *ngx_http_cellroute_new_ctx(ngx_http_request_t *r) {
  ngx_http_cellroute_ctx_t *ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_cellroute_ctx_t));
  if (ctx != NULL) {
    ngx_http_set_ctx(r, ctx, ngx_http_cellroute_module);
  }
  return ctx;
}

/* ---- waiting for the Topology Service ------------------------------------------------------ */

static void ngx_http_cellroute_push(ngx_http_cellroute_item_t *item) {
  ngx_http_cellroute_worker_t *w = &ngx_http_cellroute_worker;
  int was_empty;

  pthread_mutex_lock(&w->lock);
  was_empty = w->head == NULL;
  item->next = NULL;
  *w->tail = item;
  w->tail = &item->next;
  pthread_mutex_unlock(&w->lock);
  if (was_empty) {
    /* Non-blocking: a full pipe already holds a wake-up that drains everything. */
    (void)!write(w->notify_write, "", 1);
  }
}

/* cr_router_route_async's callback: at once on the loop, inside the call (then straight into
 * the request's pool), or later on a cellroute thread (then into the item, for the loop). */
static void ngx_http_cellroute_answered(const cr_decision *d, void *payload) {
  ngx_http_cellroute_item_t *item = payload;

  /* in_call is the loop's own variable: read it only on the loop. */
  if (pthread_equal(item->loop, pthread_self()) && item->in_call) {
    item->answered_in_call = 1;
    item->failed =
        ngx_http_cellroute_result_set(item->sink, d, item->request->pool, NULL) != NGX_OK;
    return;
  }
  item->failed = ngx_http_cellroute_result_set(&item->result, d, NULL, &item->strings) != NGX_OK;
  ngx_http_cellroute_push(item);
}

/* The request went away while waiting: the answer, when it comes, only frees the item. */
static void ngx_http_cellroute_forget(void *data) {
  ngx_http_cellroute_item_t *item = data;
  item->request = NULL;
}

static void ngx_http_cellroute_free_item(ngx_http_cellroute_item_t *item) {
  free(item->strings);
  free(item);
}

/* Detaches the waiting request from its item (the item lives on until its answer). */
static void ngx_http_cellroute_detach(ngx_http_cellroute_ctx_t *ctx) {
  ngx_http_cellroute_item_t *item = ctx->item;
  item->request = NULL;
  item->cleanup->handler = NULL;
  ctx->item = NULL;
  ctx->state = NGX_HTTP_CELLROUTE_DECIDED;
}

/* Routes r, waiting asynchronously for a pending claim: NGX_OK when decided now, NGX_AGAIN
 * when parked, NGX_ERROR. */
static ngx_int_t ngx_http_cellroute_route_async(ngx_http_request_t *r,
                                                ngx_http_cellroute_ctx_t *ctx, ngx_msec_t wait) {
  ngx_http_cellroute_worker_t *w = &ngx_http_cellroute_worker;
  cr_header stack[NGX_HTTP_CELLROUTE_STACK_HEADERS];
  cr_request req = CR_REQUEST_INIT;
  ngx_http_cellroute_item_t *item;
  ngx_pool_cleanup_t *cln;

  if (ngx_http_cellroute_request(r, &req, stack, NGX_HTTP_CELLROUTE_STACK_HEADERS) != NGX_OK) {
    return NGX_ERROR;
  }
  item = w->spare != NULL ? w->spare : malloc(sizeof(ngx_http_cellroute_item_t));
  if (item == NULL) {
    return NGX_ERROR;
  }
  w->spare = NULL;
  ngx_memzero(item, sizeof(ngx_http_cellroute_item_t));
  item->request = r;
  item->sink = &ctx->result;
  item->loop = pthread_self();
  item->in_call = 1;
  if (cr_router_route_async(w->router, &req, ngx_http_cellroute_answered, item) != CR_OK) {
    /* Not registered: no callback will come. */
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "cellroute: %s", cr_error_last()->message);
    w->spare = item;
    return ngx_http_cellroute_decide(r, ctx);
  }
  item->in_call = 0;

  if (item->answered_in_call) { /* the common case: the decision is in ctx already */
    w->spare = item;
    ctx->state = NGX_HTTP_CELLROUTE_DECIDED;
    return item->failed ? NGX_ERROR : NGX_OK;
  }

  /* Parked until the answer or the timer, whichever comes first. The variables are empty
   * meanwhile (a request that goes away while waiting is logged so). */
  ctx->item = item;
  ctx->state = NGX_HTTP_CELLROUTE_WAITING;
  cln = ngx_pool_cleanup_add(r->pool, 0);
  if (cln == NULL) {
    item->request = NULL; /* the answer, when it comes, only frees the item */
    ctx->item = NULL;
    ctx->state = NGX_HTTP_CELLROUTE_DECIDED;
    return NGX_ERROR;
  }
  cln->handler = ngx_http_cellroute_forget;
  cln->data = item;
  item->cleanup = cln;
  r->read_event_handler = ngx_http_test_reading;
  r->write_event_handler = ngx_http_cellroute_wake;
  r->connection->write->delayed = 1;
  ngx_add_timer(r->connection->write, wait);
  return NGX_AGAIN;
}

/* The parked request's write handler: the answer came (delayed cleared by the notify handler),
 * the timer fired (cleared by nginx), or a spurious write event (still delayed). */
static void ngx_http_cellroute_wake(ngx_http_request_t *r) {
  ngx_http_cellroute_ctx_t *ctx = ngx_http_get_module_ctx(r, ngx_http_cellroute_module);
  ngx_event_t *wev = r->connection->write;

  if (wev->delayed) {
    if (ngx_handle_write_event(wev, 0) != NGX_OK) {
      ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
    }
    return;
  }
  if (ctx->state == NGX_HTTP_CELLROUTE_WAITING) {
    /* cellroute_wait passed: decide with what the table has now. */
    ngx_http_cellroute_detach(ctx);
    if (ngx_http_cellroute_decide(r, ctx) != NGX_OK) {
      ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
      return;
    }
  }
  if (ngx_handle_read_event(r->connection->read, 0) != NGX_OK) {
    ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
    return;
  }
  r->read_event_handler = ngx_http_block_reading;
  r->write_event_handler = ngx_http_core_run_phases;
  ngx_http_core_run_phases(r);
}

/* An answer for a parked request, on the event loop. A request waits for one item at a time
 * and keeps it in its ctx until it is detached, so the ctx is the item's. */
static void ngx_http_cellroute_resume(ngx_http_cellroute_item_t *item) {
  ngx_http_request_t *r = item->request;
  ngx_connection_t *c = r->connection;
  ngx_http_cellroute_ctx_t *ctx = ngx_http_get_module_ctx(r, ngx_http_cellroute_module);
  ngx_int_t rc = NGX_ERROR;

  ngx_http_cellroute_detach(ctx);
  if (!item->failed) {
    rc = ngx_http_cellroute_result_copy(&ctx->result, &item->result, r->pool);
  }
  ngx_http_cellroute_free_item(item);
  c->write->delayed = 0;
  if (c->write->timer_set) {
    ngx_del_timer(c->write);
  }
  if (rc != NGX_OK) {
    ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
  } else {
    ngx_http_cellroute_wake(r);
  }
  ngx_http_run_posted_requests(c);
}

/* Events that mean something is wrong are warnings; the rest (sync_succeeded every poll,
 * topology_changed, ...) are info, below nginx's default error_log level. */
static ngx_uint_t ngx_http_cellroute_event_level(const char *name) {
  static const char *const warnings[] = {
      "sync_failed",         "answer_rejected", "reload_failed",  "snapshot_failed",
      "snapshot_unreadable", "queue_full",      "events_dropped", NULL};
  ngx_uint_t i;
  for (i = 0; warnings[i] != NULL; i++) {
    if (ngx_strcmp(name, warnings[i]) == 0) {
      return NGX_LOG_WARN;
    }
  }
  return NGX_LOG_INFO;
}

/* The pipe's read handler: every answer and event queued since the last one. */
static void ngx_http_cellroute_notified(ngx_event_t *ev) {
  ngx_http_cellroute_worker_t *w = &ngx_http_cellroute_worker;
  ngx_connection_t *c = ev->data;
  ngx_http_cellroute_item_t *item, *next;
  ngx_uint_t dropped;
  u_char buf[64];

  while (read(c->fd, buf, sizeof(buf)) > 0) {
  }
  pthread_mutex_lock(&w->lock);
  item = w->head;
  w->head = NULL;
  w->tail = &w->head;
  dropped = w->events_dropped;
  w->events_dropped = 0;
  w->events_queued = 0;
  pthread_mutex_unlock(&w->lock);

  if (dropped > 0) {
    ngx_log_error(NGX_LOG_WARN, ev->log, 0, "cellroute: %ui events dropped (the log fell behind)",
                  dropped);
  }
  for (; item != NULL; item = next) {
    next = item->next;
    if (item->is_event) {
      ngx_log_error(item->level, ev->log, 0, "cellroute: %s", item->strings);
      ngx_http_cellroute_free_item(item);
    } else if (item->request != NULL) {
      ngx_http_cellroute_resume(item);
    } else {
      ngx_http_cellroute_free_item(item);
    }
  }
}

/* cr_options_set_event_callback's callback, on a cellroute thread. */
static void ngx_http_cellroute_event(const char *name, const char *json, void *payload) {
  ngx_http_cellroute_worker_t *w = &ngx_http_cellroute_worker;
  ngx_http_cellroute_item_t *item;
  size_t len = ngx_strlen(json);
  int full;

  (void)payload;
  pthread_mutex_lock(&w->lock);
  full = w->events_queued >= NGX_HTTP_CELLROUTE_MAX_EVENTS;
  if (full) {
    w->events_dropped++;
  } else {
    w->events_queued++;
  }
  pthread_mutex_unlock(&w->lock);
  if (full) {
    return;
  }
  item = calloc(1, sizeof(ngx_http_cellroute_item_t));
  if (item != NULL) {
    item->strings = malloc(len + 1);
  }
  if (item == NULL || item->strings == NULL) {
    free(item);
    return;
  }
  ngx_memcpy(item->strings, json, len + 1);
  item->is_event = 1;
  item->level = ngx_http_cellroute_event_level(name);
  ngx_http_cellroute_push(item);
}

/* ---- the phase handler and the variables --------------------------------------------------- */

static ngx_int_t ngx_http_cellroute_handler(ngx_http_request_t *r) {
  ngx_http_cellroute_loc_conf_t *lcf = ngx_http_get_module_loc_conf(r, ngx_http_cellroute_module);
  ngx_http_cellroute_main_conf_t *mcf;
  ngx_http_cellroute_ctx_t *ctx;
  ngx_int_t rc;

  if (!lcf->enable || ngx_http_cellroute_worker.router == NULL) {
    return NGX_DECLINED;
  }
  ctx = ngx_http_get_module_ctx(r, ngx_http_cellroute_module);
  if (ctx == NULL) {
    ctx = ngx_http_cellroute_new_ctx(r);
    if (ctx == NULL) {
      return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    mcf = ngx_http_get_module_main_conf(r, ngx_http_cellroute_module);
    if (ngx_http_cellroute_worker.use_async && mcf->wait > 0 && r == r->main) {
      rc = ngx_http_cellroute_route_async(r, ctx, mcf->wait);
    } else {
      rc = ngx_http_cellroute_decide(r, ctx);
    }
    if (rc == NGX_AGAIN) {
      return NGX_AGAIN;
    }
    if (rc != NGX_OK) {
      return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
  } else if (ctx->state == NGX_HTTP_CELLROUTE_WAITING) {
    return NGX_AGAIN;
  }
  if (ctx->result.result == CR_RESULT_REJECTED) {
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0, "cellroute: rejected: %V",
                  &ctx->result.field[CR_NGX_REASON]);
    return NGX_HTTP_BAD_REQUEST;
  }
  return NGX_DECLINED;
}

/* The request's decision: the one the phase handler made, else one made now, without waiting
 * (a variable read where `cellroute` is off, or before the preaccess phase). */
static ngx_http_cellroute_ctx_t *ngx_http_cellroute_decision(ngx_http_request_t *r) {
  ngx_http_cellroute_ctx_t *ctx = ngx_http_get_module_ctx(r, ngx_http_cellroute_module);

  if (ctx != NULL) {
    return ctx;
  }
  if (ngx_http_cellroute_worker.router == NULL) {
    return NULL;
  }
  ctx = ngx_http_cellroute_new_ctx(r);
  if (ctx == NULL || ngx_http_cellroute_decide(r, ctx) != NGX_OK) {
    ngx_http_set_ctx(r, NULL, ngx_http_cellroute_module);
    return NULL;
  }
  return ctx;
}

static ngx_int_t ngx_http_cellroute_string_variable(ngx_http_request_t *r,
                                                    ngx_http_variable_value_t *v, uintptr_t data) {
  ngx_http_cellroute_ctx_t *ctx = ngx_http_cellroute_decision(r);

  if (ctx == NULL) {
    v->not_found = 1;
    return NGX_OK;
  }
  v->data = ctx->result.field[data].data;
  v->len = ctx->result.field[data].len;
  v->valid = 1;
  v->no_cacheable = 1;
  v->not_found = 0;
  return NGX_OK;
}

static ngx_http_variable_t ngx_http_cellroute_vars[] = {
    {ngx_string("cellroute_address"), NULL, ngx_http_cellroute_string_variable, CR_NGX_ADDRESS,
     NGX_HTTP_VAR_NOCACHEABLE, 0},
    {ngx_string("cellroute_rule"), NULL, ngx_http_cellroute_string_variable, CR_NGX_RULE,
     NGX_HTTP_VAR_NOCACHEABLE, 0},
    {ngx_string("cellroute_rule_action"), NULL, ngx_http_cellroute_string_variable, CR_NGX_ACTION,
     NGX_HTTP_VAR_NOCACHEABLE, 0},
    {ngx_string("cellroute_rule_type"), NULL, ngx_http_cellroute_string_variable, CR_NGX_TYPE,
     NGX_HTTP_VAR_NOCACHEABLE, 0},
    {ngx_string("cellroute_source"), NULL, ngx_http_cellroute_string_variable, CR_NGX_SOURCE,
     NGX_HTTP_VAR_NOCACHEABLE, 0},
    {ngx_string("cellroute_fallback"), NULL, ngx_http_cellroute_string_variable, CR_NGX_FALLBACK,
     NGX_HTTP_VAR_NOCACHEABLE, 0},
    {ngx_string("cellroute_reason"), NULL, ngx_http_cellroute_string_variable, CR_NGX_REASON,
     NGX_HTTP_VAR_NOCACHEABLE, 0},
    {ngx_string("cellroute_cell_id"), NULL, ngx_http_cellroute_string_variable, CR_NGX_CELL_ID,
     NGX_HTTP_VAR_NOCACHEABLE, 0},
    ngx_http_null_variable};

static ngx_int_t ngx_http_cellroute_add_variables(ngx_conf_t *cf) {
  ngx_http_variable_t *var, *v;

  for (v = ngx_http_cellroute_vars; v->name.len; v++) {
    var = ngx_http_add_variable(cf, &v->name, v->flags);
    if (var == NULL) {
      return NGX_ERROR;
    }
    var->get_handler = v->get_handler;
    var->data = v->data;
  }
  return NGX_OK;
}

/* ---- cellroute_status ----------------------------------------------------------------------- */

static ngx_int_t ngx_http_cellroute_status_handler(ngx_http_request_t *r) {
  static ngx_str_t type = ngx_string("text/plain; version=0.0.4; charset=utf-8");
  ngx_buf_t *b;
  ngx_chain_t out;
  ngx_int_t rc;
  char *text = NULL;
  size_t len;

  if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD))) {
    return NGX_HTTP_NOT_ALLOWED;
  }
  rc = ngx_http_discard_request_body(r);
  if (rc != NGX_OK) {
    return rc;
  }
  if (ngx_http_cellroute_worker.router == NULL ||
      cr_router_metrics(&text, ngx_http_cellroute_worker.router) != CR_OK) {
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "cellroute: %s",
                  ngx_http_cellroute_worker.router ? cr_error_last()->message : "no router");
    return NGX_HTTP_INTERNAL_SERVER_ERROR;
  }
  len = ngx_strlen(text);
  b = ngx_create_temp_buf(r->pool, len > 0 ? len : 1);
  if (b == NULL) {
    cr_string_free(text);
    return NGX_HTTP_INTERNAL_SERVER_ERROR;
  }
  b->last = ngx_cpymem(b->pos, text, len);
  cr_string_free(text);
  b->last_buf = (r == r->main);
  b->last_in_chain = 1;

  r->headers_out.status = NGX_HTTP_OK;
  r->headers_out.content_type = type;
  r->headers_out.content_type_len = type.len;
  r->headers_out.content_length_n = len;
  rc = ngx_http_send_header(r);
  if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
    return rc;
  }
  out.buf = b;
  out.next = NULL;
  return ngx_http_output_filter(r, &out);
}

static char *ngx_http_cellroute_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
  ngx_http_core_loc_conf_t *clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
  (void)cmd;
  (void)conf;
  clcf->handler = ngx_http_cellroute_status_handler;
  return NGX_CONF_OK;
}

/* ---- configuration -------------------------------------------------------------------------- */

static void *ngx_http_cellroute_create_main_conf(ngx_conf_t *cf) {
  ngx_http_cellroute_main_conf_t *mcf = ngx_pcalloc(cf->pool, sizeof(*mcf));
  if (mcf == NULL) {
    return NULL;
  }
  mcf->metadata = NGX_CONF_UNSET_PTR;
  mcf->wait = NGX_CONF_UNSET_MSEC;
  return mcf;
}

static void *ngx_http_cellroute_create_loc_conf(ngx_conf_t *cf) {
  ngx_http_cellroute_loc_conf_t *lcf = ngx_pcalloc(cf->pool, sizeof(*lcf));
  if (lcf == NULL) {
    return NULL;
  }
  lcf->enable = NGX_CONF_UNSET;
  return lcf;
}

static char *ngx_http_cellroute_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child) {
  ngx_http_cellroute_loc_conf_t *prev = parent, *conf = child;
  (void)cf;
  ngx_conf_merge_value(conf->enable, prev->enable, 0);
  return NGX_CONF_OK;
}

/* A file directive: relative paths are relative to the configuration's prefix, as nginx's own
 * are. */
static char *ngx_http_cellroute_set_path(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
  ngx_str_t *path = (ngx_str_t *)((char *)conf + cmd->offset);
  char *rv = ngx_conf_set_str_slot(cf, cmd, conf);

  if (rv != NGX_CONF_OK) {
    return rv;
  }
  if (path->len == 0) {
    return "needs a file name";
  }
  if (ngx_conf_full_name(cf->cycle, path, 1) != NGX_OK) {
    return NGX_CONF_ERROR;
  }
  return NGX_CONF_OK;
}

/* cellroute_tls ca=PATH [cert=PATH key=PATH] [server_name=NAME]; */
static char *ngx_http_cellroute_tls(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
  static const struct {
    ngx_str_t key;
    size_t offset;
    int path;
  } keys[] = {
      {ngx_string("ca="), offsetof(ngx_http_cellroute_main_conf_t, tls_ca), 1},
      {ngx_string("cert="), offsetof(ngx_http_cellroute_main_conf_t, tls_cert), 1},
      {ngx_string("key="), offsetof(ngx_http_cellroute_main_conf_t, tls_key), 1},
      {ngx_string("server_name="), offsetof(ngx_http_cellroute_main_conf_t, tls_server_name), 0},
  };
  ngx_http_cellroute_main_conf_t *mcf = conf;
  ngx_str_t *value = cf->args->elts, *dst;
  ngx_uint_t i, k;

  (void)cmd;
  if (mcf->tls_ca.data != NULL) {
    return "is duplicate";
  }
  for (i = 1; i < cf->args->nelts; i++) {
    for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
      if (value[i].len > keys[k].key.len &&
          ngx_strncmp(value[i].data, keys[k].key.data, keys[k].key.len) == 0) {
        break;
      }
    }
    if (k == sizeof(keys) / sizeof(keys[0])) {
      ngx_conf_log_error(
          NGX_LOG_EMERG, cf, 0,
          "invalid parameter \"%V\": expected ca=, cert=, key= or server_name=", &value[i]);
      return NGX_CONF_ERROR;
    }
    dst = (ngx_str_t *)((char *)mcf + keys[k].offset);
    dst->data = value[i].data + keys[k].key.len;
    dst->len = value[i].len - keys[k].key.len;
    if (keys[k].path && ngx_conf_full_name(cf->cycle, dst, 1) != NGX_OK) {
      return NGX_CONF_ERROR;
    }
  }
  if (mcf->tls_ca.len == 0) {
    return "needs ca=PATH";
  }
  if ((mcf->tls_cert.len == 0) != (mcf->tls_key.len == 0)) {
    return "needs both cert= and key=, or neither";
  }
  return NGX_CONF_OK;
}

/* ngx_str_t values from the configuration parser are NUL-terminated: the parser and
 * ngx_conf_full_name both allocate one byte more and write it. */
static const char *ngx_http_cellroute_cstr(const ngx_str_t *s) {
  return s->len > 0 ? (const char *)s->data : NULL;
}

/* The router's options from the configuration; the service only when with_service. */
static cr_options *ngx_http_cellroute_options(ngx_http_cellroute_main_conf_t *mcf,
                                              int with_service) {
  const struct {
    const ngx_str_t *value;
    int (*set)(cr_options *, const char *);
    int service; /* only with the service */
  } settings[] = {
      {&mcf->rules, cr_options_set_rules_file, 0},
      {&mcf->topology, cr_options_set_topology_file, 0},
      {&mcf->claims, cr_options_set_claims_file, 0},
      {&mcf->service, cr_options_set_topology_service, 1},
      {&mcf->snapshot, cr_options_set_snapshot_path, 1},
  };
  cr_options *o = NULL;
  ngx_keyval_t *kv;
  ngx_uint_t i;
  int rc;

  if (cr_options_new(&o) != CR_OK) {
    return NULL;
  }
  rc = CR_OK;
  for (i = 0; rc == CR_OK && i < sizeof(settings) / sizeof(settings[0]); i++) {
    if (settings[i].value->len > 0 && (with_service || !settings[i].service)) {
      rc = settings[i].set(o, ngx_http_cellroute_cstr(settings[i].value));
    }
  }
  if (with_service && mcf->service.len > 0) {
    if (rc == CR_OK && mcf->tls_ca.len > 0) {
      rc = cr_options_set_tls(
          o, ngx_http_cellroute_cstr(&mcf->tls_ca), ngx_http_cellroute_cstr(&mcf->tls_cert),
          ngx_http_cellroute_cstr(&mcf->tls_key), ngx_http_cellroute_cstr(&mcf->tls_server_name));
    }
    if (mcf->metadata != NGX_CONF_UNSET_PTR && mcf->metadata != NULL) {
      kv = mcf->metadata->elts;
      for (i = 0; rc == CR_OK && i < mcf->metadata->nelts; i++) {
        rc = cr_options_add_metadata(o, ngx_http_cellroute_cstr(&kv[i].key),
                                     ngx_http_cellroute_cstr(&kv[i].value));
      }
    }
    if (rc == CR_OK) {
      rc = cr_options_set_event_callback(o, ngx_http_cellroute_event, NULL);
    }
  }
  if (rc != CR_OK) {
    cr_options_free(o);
    return NULL;
  }
  return o;
}

static void ngx_http_cellroute_free_router(void *data) { cr_router_free(data); }

static char *ngx_http_cellroute_init_main_conf(ngx_conf_t *cf, void *conf) {
  ngx_http_cellroute_main_conf_t *mcf = conf;
  ngx_pool_cleanup_t *cln;
  cr_options *options;
  int rc;

  ngx_conf_init_msec_value(mcf->wait, 1000);
  if (mcf->service.len == 0 && (mcf->tls_ca.len || mcf->snapshot.len ||
                                (mcf->metadata != NGX_CONF_UNSET_PTR && mcf->metadata != NULL))) {
    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                  "cellroute: cellroute_tls, cellroute_metadata and cellroute_snapshot need "
                  "cellroute_topology_service");
    return NGX_CONF_ERROR;
  }

  /* The service's settings are checked now too (the setters validate them), though only
   * workers use them. */
  options = ngx_http_cellroute_options(mcf, 1);
  if (options == NULL) {
    ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "cellroute: %s", cr_error_last()->message);
    return NGX_CONF_ERROR;
  }
  cr_options_free(options);

  cln = ngx_pool_cleanup_add(cf->pool, 0);
  options = ngx_http_cellroute_options(mcf, 0);
  if (cln == NULL || options == NULL) {
    ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "cellroute: %s", cr_error_last()->message);
    cr_options_free(options);
    return NGX_CONF_ERROR;
  }
  rc = cr_router_new(&mcf->router, options);
  cr_options_free(options);
  if (rc != CR_OK) {
    /* The message carries the file:line:column of each error. */
    ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "cellroute: %s", cr_error_last()->message);
    return NGX_CONF_ERROR;
  }
  cln->handler = ngx_http_cellroute_free_router;
  cln->data = mcf->router;
  return NGX_CONF_OK;
}

static ngx_int_t ngx_http_cellroute_init(ngx_conf_t *cf) {
  ngx_http_core_main_conf_t *cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
  ngx_http_handler_pt *h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);

  if (h == NULL) {
    return NGX_ERROR;
  }
  *h = ngx_http_cellroute_handler;
  return NGX_OK;
}

/* ---- a worker's life --------------------------------------------------------------------------
 */

static ngx_int_t ngx_http_cellroute_init_process(ngx_cycle_t *cycle) {
  ngx_http_cellroute_worker_t *w = &ngx_http_cellroute_worker;
  ngx_http_cellroute_main_conf_t *mcf =
      ngx_http_cycle_get_module_main_conf(cycle, ngx_http_cellroute_module);
  cr_options *options;
  int fds[2];

  if (mcf == NULL || mcf->router == NULL) {
    return NGX_OK;
  }
  w->router = mcf->router;
  w->head = NULL;
  w->tail = &w->head;
  if (!ngx_http_cellroute_new_decision(&w->decision)) {
    ngx_log_error(NGX_LOG_EMERG, cycle->log, 0, "cellroute: %s", cr_error_last()->message);
    return NGX_ERROR;
  }
  if (mcf->service.len == 0) {
    return NGX_OK; /* the inherited router is this worker's */
  }

  if (pipe(fds) == -1) {
    ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno, "cellroute: pipe() failed");
    return NGX_ERROR;
  }
  if (ngx_nonblocking(fds[0]) == -1 || ngx_nonblocking(fds[1]) == -1 ||
      fcntl(fds[0], F_SETFD, FD_CLOEXEC) == -1 || fcntl(fds[1], F_SETFD, FD_CLOEXEC) == -1) {
    ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno, "cellroute: pipe setup failed");
    close(fds[0]);
    close(fds[1]);
    return NGX_ERROR;
  }
  w->notify = ngx_get_connection(fds[0], cycle->log);
  if (w->notify == NULL) {
    close(fds[0]);
    close(fds[1]);
    return NGX_ERROR;
  }
  w->notify_write = fds[1];
  w->notify->read->handler = ngx_http_cellroute_notified;
  w->notify->read->log = cycle->log;
  w->notify->data = NULL;
  w->notify->read->data = w->notify;
  if (ngx_handle_read_event(w->notify->read, 0) != NGX_OK) {
    return NGX_ERROR;
  }

  /* gRPC does not survive fork: this worker's own client, started now. */
  options = ngx_http_cellroute_options(mcf, 1);
  if (options == NULL || cr_router_new(&w->own, options) != CR_OK) {
    ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                  "cellroute: no Topology Service client in this worker, routing from the "
                  "files only: %s",
                  cr_error_last()->message);
  } else {
    w->router = w->own;
    w->use_async = 1;
  }
  cr_options_free(options);
  return NGX_OK;
}

static void ngx_http_cellroute_exit_process(ngx_cycle_t *cycle) {
  ngx_http_cellroute_worker_t *w = &ngx_http_cellroute_worker;
  ngx_http_cellroute_item_t *item, *next;

  (void)cycle;
  w->router = NULL;
  w->use_async = 0;
  /* Every pending callback runs before this returns, and none after. */
  cr_router_free(w->own);
  w->own = NULL;
  pthread_mutex_lock(&w->lock);
  item = w->head;
  w->head = NULL;
  w->tail = &w->head;
  pthread_mutex_unlock(&w->lock);
  for (; item != NULL; item = next) {
    next = item->next;
    if (item->request != NULL) {
      item->cleanup->handler = NULL;
    }
    ngx_http_cellroute_free_item(item);
  }
  free(w->spare); /* its strings were never set: answers inside the call go to the pool */
  w->spare = NULL;
  if (w->notify != NULL) {
    ngx_close_connection(w->notify);
    w->notify = NULL;
  }
  if (w->notify_write != -1) {
    close(w->notify_write);
    w->notify_write = -1;
  }
  cr_decision_free(w->decision);
  w->decision = NULL;
}
