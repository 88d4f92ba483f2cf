/* The native side of the Ruby binding: a thin layer over the C API (Ruby raises with
 * longjmp, which would skip C++ destructors, so it never calls C++ directly). Objects are
 * TypedData with size functions; only calls that may wait on the network release the GVL;
 * nothing starts at require. */
#include <pthread.h>
#include <ruby.h>
#include <ruby/thread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cellroute.h"

static VALUE mCellroute, cNativeRouter, cDecision, cEventQueue, eError;
static VALUE eByCode[7];

static void raise_last(void) {
  const cr_error *e = cr_error_last();
  int index = -e->code;
  VALUE klass = (index >= 1 && index <= 6) ? eByCode[index] : eError;
  rb_raise(klass, "%s", e->message);
}

/* A Ruby String from a string cellroute returned through char **out, which is freed. */
static VALUE take_string(char *s) {
  VALUE out = rb_utf8_str_new_cstr(s);
  cr_string_free(s);
  return out;
}

/* ---- Decision ---------------------------------------------------------------------------- */

/* Decisions whose Ruby objects were collected, kept for the next route: a decision is about
 * 9 KiB, and making one (malloc, then zero-filling its buffers) was a fifth of a call. The
 * list is bounded and touched only with the GVL held: the GC frees under it too. A decision
 * taken from it is overwritten whole by the next route. */
#define SPARE_DECISIONS 32
static cr_decision *spare_decisions[SPARE_DECISIONS];
static int spare_count;

static int decision_take(cr_decision **out) {
  if (spare_count > 0) {
    *out = spare_decisions[--spare_count];
    return CR_OK;
  }
  return cr_decision_new(out);
}

/* A decision that no Ruby object holds (collected, or never wrapped). */
static void decision_give_back(cr_decision *d) {
  if (spare_count < SPARE_DECISIONS) {
    spare_decisions[spare_count++] = d;
  } else {
    cr_decision_free(d);
  }
}

static void decision_free(void *p) { decision_give_back((cr_decision *)p); }
static size_t decision_size(const void *p) { return p ? 9 * 1024 : 0; }
static const rb_data_type_t decision_type = {
    .wrap_struct_name = "Cellroute::Decision",
    .function = {.dmark = NULL, .dfree = decision_free, .dsize = decision_size},
    .flags = RUBY_TYPED_FREE_IMMEDIATELY};

static VALUE wrap_decision(cr_decision *d) {
  return TypedData_Wrap_Struct(cDecision, &decision_type, d);
}

static cr_decision *get_decision(VALUE self) {
  cr_decision *d;
  TypedData_Get_Struct(self, cr_decision, &decision_type, d);
  return d;
}

#define DECISION_STRING(name)                                                  \
  static VALUE decision_##name(VALUE self) {                                   \
    return rb_utf8_str_new_cstr(cr_decision_##name(get_decision(self)));       \
  }
DECISION_STRING(rule)
DECISION_STRING(action)
static VALUE decision_type_(VALUE self) { return rb_utf8_str_new_cstr(cr_decision_type(get_decision(self))); }
DECISION_STRING(value)
DECISION_STRING(address)
DECISION_STRING(reason)

/* Names from a fixed set are Symbols, as result is. */
static VALUE decision_source(VALUE self) {
  return ID2SYM(rb_intern(cr_decision_source(get_decision(self))));
}
static VALUE decision_fallback(VALUE self) {
  const char *f = cr_decision_fallback(get_decision(self));
  return *f ? ID2SYM(rb_intern(f)) : Qnil;
}
static VALUE decision_cell_id(VALUE self) {
  int64_t id = cr_decision_cell_id(get_decision(self));
  return id ? LL2NUM(id) : Qnil;
}
static VALUE decision_age_ms(VALUE self) { return LL2NUM(cr_decision_age_ms(get_decision(self))); }
static VALUE decision_result(VALUE self) {
  switch (cr_decision_result(get_decision(self))) {
    case CR_RESULT_MATCHED: return ID2SYM(rb_intern("matched"));
    case CR_RESULT_REJECTED: return ID2SYM(rb_intern("rejected"));
    default: return ID2SYM(rb_intern("no_match"));
  }
}
static VALUE decision_to_json(VALUE self) {
  char *json = NULL;
  if (cr_decision_json(&json, get_decision(self)) != CR_OK) raise_last();
  return take_string(json);
}

/* ---- EventQueue ------------------------------------------------------------------------ */

/* Ruby cannot be called from cellroute's event thread, so events are queued here (as JSON
 * lines, bounded) and a Ruby thread pops them with the GVL released. Past the bound an event is
 * dropped and counted on the last one queued; pop returns that count (an Integer) right after
 * it, as the library reports its own drops. The queue is shared by the router's callback and
 * the Ruby object, and freed when both are done with it (either may be collected first). */
#define EVENT_QUEUE_CAPACITY 1024

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  char *items[EVENT_QUEUE_CAPACITY];
  unsigned long long dropped_after[EVENT_QUEUE_CAPACITY]; /* events lost right after items[i] */
  unsigned long long dropped_next;                        /* to report before the next item */
  int head, count;
  int closed;    /* no more events: pop returns nil once empty */
  int interrupt; /* Ruby wants the popping thread back (a signal, Thread#kill, exit) */
  int refs;
  pid_t pid; /* the process whose threads use the lock: another (a forked child) leaves it be */
} event_queue;

/* In a child forked from the process that made the queue (and that has not taken it over with
 * after_fork), the lock and condition variable may be held or waited on by threads that are
 * not here: the queue is left alone, leaked. */
static int queue_foreign(const event_queue *q) { return q->pid != getpid(); }

static void queue_unref(event_queue *q) {
  int refs, i;
  if (queue_foreign(q)) return;
  pthread_mutex_lock(&q->mu);
  refs = --q->refs;
  pthread_mutex_unlock(&q->mu);
  if (refs > 0) return;
  for (i = 0; i < q->count; ++i) free(q->items[(q->head + i) % EVENT_QUEUE_CAPACITY]);
  /* (No pthread_*_destroy: they would wait for waiters a fork may have left recorded in
   * them; on Linux they free nothing.) */
  free(q);
}

/* cr_event_cb, on cellroute's event thread: no Ruby here. A full queue drops the event. */
static void queue_push(const char *name, const char *json, void *payload) {
  event_queue *q = (event_queue *)payload;
  char *copy = strdup(json);
  (void)name;
  if (copy == NULL) return;
  pthread_mutex_lock(&q->mu);
  if (!q->closed && q->count < EVENT_QUEUE_CAPACITY) {
    int at = (q->head + q->count) % EVENT_QUEUE_CAPACITY;
    q->items[at] = copy;
    q->dropped_after[at] = 0;
    q->count++;
    copy = NULL;
    pthread_cond_signal(&q->cv);
  } else if (!q->closed) {
    q->dropped_after[(q->head + q->count - 1) % EVENT_QUEUE_CAPACITY]++; /* full: count >= 1 */
  }
  pthread_mutex_unlock(&q->mu);
  free(copy);
}

static void queue_close(event_queue *q) {
  if (queue_foreign(q)) return;
  pthread_mutex_lock(&q->mu);
  q->closed = 1;
  pthread_cond_broadcast(&q->cv);
  pthread_mutex_unlock(&q->mu);
}

static void queue_free(void *p) {
  event_queue **box = (event_queue **)p;
  if (*box) {
    queue_close(*box);
    queue_unref(*box);
  }
  xfree(box);
}
static size_t queue_size(const void *p) {
  return sizeof(event_queue *) + sizeof(event_queue);
}
static const rb_data_type_t queue_type = {
    .wrap_struct_name = "Cellroute::EventQueue",
    .function = {.dmark = NULL, .dfree = queue_free, .dsize = queue_size},
    .flags = RUBY_TYPED_FREE_IMMEDIATELY};

static VALUE queue_alloc(VALUE klass) {
  event_queue **box;
  event_queue *q;
  VALUE obj = TypedData_Make_Struct(klass, event_queue *, &queue_type, box);
  q = (event_queue *)calloc(1, sizeof(event_queue));
  if (q == NULL) rb_raise(rb_eNoMemError, "cellroute: no memory for an event queue");
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->cv, NULL);
  q->refs = 1;
  q->pid = getpid();
  *box = q;
  return obj;
}

static event_queue *get_queue(VALUE self) {
  event_queue **box;
  TypedData_Get_Struct(self, event_queue *, &queue_type, box);
  return *box;
}

typedef struct {
  event_queue *q;
  char *item;
  unsigned long long dropped; /* instead of an item: events lost after the previous one */
} pop_call;

static void *queue_wait_nogvl(void *p) {
  pop_call *c = (pop_call *)p;
  event_queue *q = c->q;
  pthread_mutex_lock(&q->mu);
  while (q->count == 0 && q->dropped_next == 0 && !q->closed && !q->interrupt)
    pthread_cond_wait(&q->cv, &q->mu);
  if (q->dropped_next > 0) {
    c->dropped = q->dropped_next;
    q->dropped_next = 0;
  } else if (q->count > 0) {
    c->item = q->items[q->head];
    q->dropped_next = q->dropped_after[q->head];
    q->head = (q->head + 1) % EVENT_QUEUE_CAPACITY;
    q->count--;
  }
  q->interrupt = 0;
  pthread_mutex_unlock(&q->mu);
  return NULL;
}

static void queue_wake(void *p) {
  event_queue *q = (event_queue *)p;
  pthread_mutex_lock(&q->mu);
  q->interrupt = 1;
  pthread_cond_broadcast(&q->cv);
  pthread_mutex_unlock(&q->mu);
}

/* The next event's JSON, or the number of events dropped after the previous one, waiting with
 * the GVL released; nil once closed and empty. */
static VALUE queue_pop(VALUE self) {
  event_queue *q = get_queue(self);
  for (;;) {
    pop_call c = {q, NULL, 0};
    int closed;
    rb_thread_call_without_gvl(queue_wait_nogvl, &c, queue_wake, q);
    if (c.dropped > 0) return ULL2NUM(c.dropped);
    if (c.item != NULL) {
      VALUE s = rb_utf8_str_new_cstr(c.item);
      free(c.item);
      return s;
    }
    pthread_mutex_lock(&q->mu);
    closed = q->closed && q->count == 0;
    pthread_mutex_unlock(&q->mu);
    if (closed) return Qnil;
    rb_thread_check_ints(); /* raises if the thread is being killed */
  }
}

static VALUE queue_close_m(VALUE self) {
  queue_close(get_queue(self));
  return Qnil;
}

/* In a forked child: the popping thread is gone, and the lock may have been held by a thread
 * that no longer exists. Events queued belong to the parent, which delivers them. */
static VALUE queue_after_fork(VALUE self) {
  event_queue *q = get_queue(self);
  int i;
  if (!queue_foreign(q)) return Qnil; /* this process's already */
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->cv, NULL);
  for (i = 0; i < q->count; ++i) free(q->items[(q->head + i) % EVENT_QUEUE_CAPACITY]);
  q->head = q->count = 0;
  q->dropped_next = 0;
  q->interrupt = 0;
  q->closed = 0;
  q->pid = getpid();
  return Qnil;
}

/* ---- Router ------------------------------------------------------------------------------ */

/* Forks this process descends from: a router notices it is in a child with one comparison,
 * without a getpid() system call per request. Counted by a pthread_atfork handler, so every
 * fork() counts, Process.daemon's and a C extension's included (Process._fork sees only
 * Ruby's fork and popen); the child runs it alone, before any other code. */
static unsigned long fork_generation;

static void count_fork(void) { ++fork_generation; }
static VALUE cellroute_fork_generation(VALUE self) { return ULONG2NUM(fork_generation); }

typedef struct {
  cr_router *router;
  event_queue *events; /* a reference, or NULL */
  /* The fork generation the router was made or taken over in (after_fork): route answers
   * nil elsewhere, and the Ruby side takes the router over first. */
  unsigned long generation;
} router_box;

static void router_free(void *p) {
  router_box *b = (router_box *)p;
  cr_router_free(b->router); /* the callback is not called after this returns */
  if (b->events) {
    queue_close(b->events);
    queue_unref(b->events);
  }
  xfree(b);
}
static size_t router_size(const void *p) { return sizeof(router_box); }
static const rb_data_type_t router_type = {
    .wrap_struct_name = "Cellroute::NativeRouter",
    .function = {.dmark = NULL, .dfree = router_free, .dsize = router_size},
    .flags = RUBY_TYPED_FREE_IMMEDIATELY};

static VALUE router_alloc(VALUE klass) {
  router_box *b;
  VALUE obj = TypedData_Make_Struct(klass, router_box, &router_type, b);
  b->router = NULL;
  b->events = NULL;
  b->generation = 0; /* set with the router (initialize); never read before */
  return obj;
}

static router_box *get_box(VALUE self) {
  router_box *b;
  TypedData_Get_Struct(self, router_box, &router_type, b);
  if (b->router == NULL) rb_raise(eError, "router is not initialized");
  return b;
}

static cr_router *get_router(VALUE self) { return get_box(self)->router; }

/* The option `key` as a String (converted with to_str), or NULL when absent. The String is
 * stored in *keep, which the caller keeps on its stack (volatile, so the conservative GC sees
 * it) until it has read the bytes: a converted value is a new object nothing else refers to.
 * Without len, the bytes are a C string: one with a NUL byte raises ArgumentError. */
static const char *opt_str(VALUE opts, const char *key, long *len, volatile VALUE *keep) {
  VALUE v = rb_hash_aref(opts, ID2SYM(rb_intern(key)));
  if (NIL_P(v)) return NULL;
  StringValue(v);
  *keep = v;
  if (!len) return StringValueCStr(v);
  *len = RSTRING_LEN(v);
  return RSTRING_PTR(v);
}

/* Options being filled in, held by a hidden Ruby object while Ruby code may still raise
 * (a string with a NUL byte, a metadata value without to_s): the GC then frees them rather than
 * losing them. */
static void options_free(void *p) { cr_options_free((cr_options *)p); }
static const rb_data_type_t options_type = {
    .wrap_struct_name = "Cellroute::Options",
    .function = {.dmark = NULL, .dfree = options_free, .dsize = NULL},
    .flags = RUBY_TYPED_FREE_IMMEDIATELY};

/* NativeRouter.new(options_hash) */
/* Options from the Hash Router.new and Router#reload take; raises on a bad one. */
static cr_options *options_from_hash(VALUE opts) {
  cr_options *o = NULL;
  const char *s;
  long len = 0;
  int rc = CR_OK;
  VALUE metadata, holder;
  volatile VALUE keep[4] = {Qnil, Qnil, Qnil, Qnil};
  Check_Type(opts, T_HASH);
  holder = TypedData_Wrap_Struct(0, &options_type, NULL);
  if (cr_options_new(&o) != CR_OK) raise_last();
  DATA_PTR(holder) = o;
  if ((s = opt_str(opts, "rules_path", NULL, &keep[0]))) rc |= cr_options_set_rules_file(o, s);
  if ((s = opt_str(opts, "rules", &len, &keep[0]))) {
    rc |= cr_options_set_rules_text(o, s, (size_t)len);
  }
  if ((s = opt_str(opts, "topology_path", NULL, &keep[0]))) {
    rc |= cr_options_set_topology_file(o, s);
  }
  if ((s = opt_str(opts, "topology", &len, &keep[0]))) {
    rc |= cr_options_set_topology_text(o, s, (size_t)len);
  }
  if ((s = opt_str(opts, "claims_path", NULL, &keep[0]))) rc |= cr_options_set_claims_file(o, s);
  if ((s = opt_str(opts, "claims", &len, &keep[0]))) {
    rc |= cr_options_set_claims_text(o, s, (size_t)len);
  }
  if ((s = opt_str(opts, "topology_service", NULL, &keep[0]))) {
    rc |= cr_options_set_topology_service(o, s);
  }
  if ((s = opt_str(opts, "snapshot_path", NULL, &keep[0]))) {
    rc |= cr_options_set_snapshot_path(o, s);
  }
  if ((s = opt_str(opts, "tls_ca", NULL, &keep[0]))) {
    /* Four strings read by one call: each kept in a slot of its own until then. */
    const char *cert = opt_str(opts, "tls_cert", NULL, &keep[1]);
    const char *key = opt_str(opts, "tls_key", NULL, &keep[2]);
    const char *name = opt_str(opts, "tls_server_name", NULL, &keep[3]);
    rc |= cr_options_set_tls(o, s, cert, key, name);
  }
  metadata = rb_hash_aref(opts, ID2SYM(rb_intern("metadata")));
  if (!NIL_P(metadata)) {
    VALUE pairs = rb_funcall(metadata, rb_intern("to_a"), 0);
    long i;
    for (i = 0; i < RARRAY_LEN(pairs); ++i) {
      VALUE kv = rb_ary_entry(pairs, i);
      VALUE k = rb_String(rb_ary_entry(kv, 0)), v = rb_String(rb_ary_entry(kv, 1));
      rc |= cr_options_add_metadata(o, StringValueCStr(k), StringValueCStr(v));
    }
  }
  if (rc != CR_OK) raise_last(); /* the holder frees them */
  DATA_PTR(holder) = NULL;       /* the caller's now */
  RB_GC_GUARD(holder);
  return o;
}

/* NativeRouter.new(options, events): events is an EventQueue or nil. */
static VALUE router_initialize(VALUE self, VALUE opts, VALUE events) {
  router_box *b;
  cr_options *o;
  event_queue *q = NIL_P(events) ? NULL : get_queue(events);
  int rc;
  TypedData_Get_Struct(self, router_box, &router_type, b);
  o = options_from_hash(opts);
  if (q && cr_options_set_event_callback(o, queue_push, q) != CR_OK) {
    cr_options_free(o);
    raise_last();
  }
  rc = cr_router_new(&b->router, o);
  cr_options_free(o);
  if (rc != CR_OK) raise_last();
  b->generation = fork_generation;
  if (q) {
    pthread_mutex_lock(&q->mu);
    q->refs++;
    pthread_mutex_unlock(&q->mu);
    b->events = q;
  }
  return self;
}

typedef struct {
  cr_router *router;
  const cr_options *options;
  int rc;
} reload_call;

static void *reload_nogvl(void *p) {
  reload_call *c = (reload_call *)p;
  c->rc = cr_router_reload(c->router, c->options);
  return NULL;
}

/* Reads files: the GVL is released, and the options (copies of every string) are ours. */
static VALUE router_reload(VALUE self, VALUE opts) {
  reload_call c;
  c.router = get_router(self);
  c.options = options_from_hash(opts);
  c.rc = CR_OK;
  rb_thread_call_without_gvl(reload_nogvl, &c, RUBY_UBF_IO, NULL);
  cr_options_free((cr_options *)c.options);
  if (c.rc != CR_OK) raise_last();
  return Qnil;
}

static VALUE router_metrics(VALUE self) {
  char *text = NULL;
  if (cr_router_metrics(&text, get_router(self)) != CR_OK) raise_last();
  return take_string(text);
}

/* A request built from Ruby values; the strings stay referenced (and so pinned) by the
 * caller's frame for the duration of the call. */
#define INLINE_HEADERS 16

typedef struct {
  cr_request req;
  cr_header *headers;
  cr_header *cookies;
  /* Where the headers and cookies go when they fit: most requests need no allocation. */
  cr_header inline_headers[INLINE_HEADERS];
  cr_header inline_cookies[INLINE_HEADERS];
  /* Longer lists: Ruby temporary buffers, which the GC frees if a later step raises. */
  volatile VALUE spill[2];
  /* The Ruby values the views point into, kept on the caller's stack (volatile, so the
   * conservative GC sees them) until the request is freed. */
  volatile VALUE keep[6];
} request_box;

typedef struct {
  cr_header *out;
  long i;
  int bad;
} hash_fill;

/* k and v are Strings (the callers check): views of them, not copies, so nothing is made
 * that the GC could not see. The Ruby layer converts symbols and numbers before calling. */
static void set_header(cr_header *h, VALUE k, VALUE v) {
  h->name = RSTRING_PTR(k);
  h->name_len = (size_t)RSTRING_LEN(k);
  h->value = RSTRING_PTR(v);
  h->value_len = (size_t)RSTRING_LEN(v);
}

static int fill_from_hash(VALUE k, VALUE v, VALUE arg) {
  hash_fill *f = (hash_fill *)arg;
  if (!RB_TYPE_P(k, T_STRING) || !RB_TYPE_P(v, T_STRING)) {
    f->bad = 1; /* raised by the caller, after freeing */
    return ST_STOP;
  }
  set_header(&f->out[f->i++], k, v);
  return ST_CONTINUE;
}

/* A place for n headers: buf when they fit (INLINE_HEADERS), else a Ruby temporary buffer
 * held by *spill (freed by free_request, or by the GC when something raises first). */
static cr_header *header_space(long n, cr_header *buf, volatile VALUE *spill) {
  if (n <= INLINE_HEADERS) return buf;
  return (cr_header *)rb_alloc_tmp_buffer(spill, n * (long)sizeof(cr_header));
}

/* Headers from a Hash (name => value) or an Array of [name, value], of Strings. */
static cr_header *pairs_to_headers(VALUE pairs, size_t *count, int *bad, cr_header *buf,
                                   volatile VALUE *spill) {
  long i, n;
  cr_header *out;
  *count = 0;
  if (NIL_P(pairs)) return NULL;
  if (RB_TYPE_P(pairs, T_HASH)) {
    hash_fill f;
    n = (long)RHASH_SIZE(pairs);
    f.out = header_space(n, buf, spill);
    f.i = 0;
    f.bad = 0;
    rb_hash_foreach(pairs, fill_from_hash, (VALUE)&f);
    *count = (size_t)f.i;
    *bad |= f.bad;
    return f.out;
  }
  if (!RB_TYPE_P(pairs, T_ARRAY)) {
    *bad = 1;
    return NULL;
  }
  n = RARRAY_LEN(pairs);
  out = header_space(n, buf, spill);
  for (i = 0; i < n; ++i) {
    VALUE kv = rb_ary_entry(pairs, i);
    if (!RB_TYPE_P(kv, T_ARRAY) || RARRAY_LEN(kv) != 2 ||
        !RB_TYPE_P(rb_ary_entry(kv, 0), T_STRING) || !RB_TYPE_P(rb_ary_entry(kv, 1), T_STRING)) {
      *bad = 1;
      break;
    }
    set_header(&out[i], rb_ary_entry(kv, 0), rb_ary_entry(kv, 1));
  }
  *count = (size_t)n;
  return out;
}

/* Frees what pairs_to_headers took (nothing when the pairs fit inline). */
static void free_request(request_box *b) {
  rb_free_tmp_buffer(&b->spill[0]);
  rb_free_tmp_buffer(&b->spill[1]);
}

/* A nil query means "the query is in the path, after its first '?'", as the Ruby side's
 * split does; the views then point into the one path string. */
static void build_request(request_box *b, VALUE method, VALUE host, VALUE path, VALUE query,
                          VALUE headers, VALUE cookies) {
  cr_request init = CR_REQUEST_INIT;
  b->req = init;
  b->headers = NULL;
  b->cookies = NULL;
  b->spill[0] = b->spill[1] = 0;
  b->keep[0] = method;
  b->keep[1] = host;
  b->keep[2] = path;
  b->keep[3] = query;
  b->keep[4] = headers;
  b->keep[5] = cookies;
  if (!RB_TYPE_P(path, T_STRING)) {
    rb_raise(rb_eTypeError, "path must be a String, not %" PRIsVALUE, rb_obj_class(path));
  }
  if (!NIL_P(query) && !RB_TYPE_P(query, T_STRING)) {
    rb_raise(rb_eTypeError, "query must be a String, not %" PRIsVALUE, rb_obj_class(query));
  }
  StringValue(method);
  StringValue(host);
  b->req.method = RSTRING_PTR(method);
  b->req.method_len = (size_t)RSTRING_LEN(method);
  b->req.host = RSTRING_PTR(host);
  b->req.host_len = (size_t)RSTRING_LEN(host);
  b->req.path = RSTRING_PTR(path);
  b->req.path_len = (size_t)RSTRING_LEN(path);
  if (NIL_P(query)) {
    const char *mark = memchr(b->req.path, '?', b->req.path_len);
    b->req.query = "";
    if (mark != NULL) {
      b->req.query = mark + 1;
      b->req.query_len = b->req.path_len - (size_t)(mark + 1 - b->req.path);
      b->req.path_len = (size_t)(mark - b->req.path);
    }
  } else {
    b->req.query = RSTRING_PTR(query);
    b->req.query_len = (size_t)RSTRING_LEN(query);
  }
  {
    int bad = 0;
    b->headers =
        pairs_to_headers(headers, &b->req.header_count, &bad, b->inline_headers, &b->spill[0]);
    b->cookies =
        pairs_to_headers(cookies, &b->req.cookie_count, &bad, b->inline_cookies, &b->spill[1]);
    if (bad) {
      free_request(b);
      rb_raise(rb_eTypeError, "headers and cookies must be a Hash or [name, value] pairs of Strings");
    }
  }
  b->req.headers = b->headers;
  b->req.cookies = b->cookies;
}

/* nil when the router was made before a fork and not yet taken over in this process
 * (NativeRouter#after_fork): the Ruby side does that, then routes again. */
static VALUE router_route(VALUE self, VALUE method, VALUE host, VALUE path, VALUE query,
                          VALUE headers, VALUE cookies) {
  request_box b;
  cr_decision *d = NULL;
  int rc;
  router_box *box = get_box(self);
  cr_router *r = box->router;
  if (box->generation != fork_generation) return Qnil;
  /* What may raise comes first, before anything is made that the GC would not free: the
   * object (empty until routed into), then the request (TypeError for headers that are not
   * Strings; the Ruby side then converts and calls again). */
  VALUE obj = wrap_decision(NULL);
  build_request(&b, method, host, path, query, headers, cookies);
  if (decision_take(&d) != CR_OK) {
    free_request(&b);
    raise_last();
  }
  rc = cr_router_route(d, r, &b.req);
  free_request(&b);
  if (rc != CR_OK) {
    decision_give_back(d);
    raise_last();
  }
  DATA_PTR(obj) = d;
  return obj;
}

typedef struct {
  cr_decision *out;
  const cr_router *router;
  const cr_request *req;
  int64_t timeout_ms;
  int rc;
} wait_call;

static void *route_wait_nogvl(void *p) {
  wait_call *c = (wait_call *)p;
  c->rc = cr_router_route_wait(c->out, c->router, c->req, c->timeout_ms);
  return NULL;
}

/* A copy of a request in one malloc'd block that owns every byte: a call that releases the
 * GVL must not read Ruby strings, which another thread may change or free meanwhile. */
static cr_request *copy_request(const cr_request *r) {
  size_t i, n = sizeof(cr_request) + (r->header_count + r->cookie_count) * sizeof(cr_header);
  size_t text = r->method_len + r->host_len + r->path_len + r->query_len;
  cr_request *c;
  cr_header *h;
  char *p;
  for (i = 0; i < r->header_count; ++i) text += r->headers[i].name_len + r->headers[i].value_len;
  for (i = 0; i < r->cookie_count; ++i) text += r->cookies[i].name_len + r->cookies[i].value_len;
  c = (cr_request *)xmalloc(n + text + 1);
  *c = *r;
  h = (cr_header *)(c + 1);
  p = (char *)(h + r->header_count + r->cookie_count);
#define CR_COPY(dst, src, len) \
  do {                         \
    memcpy(p, (src), (len));   \
    (dst) = p;                 \
    p += (len);                \
  } while (0)
  CR_COPY(c->method, r->method, r->method_len);
  CR_COPY(c->host, r->host, r->host_len);
  CR_COPY(c->path, r->path, r->path_len);
  CR_COPY(c->query, r->query, r->query_len);
  c->headers = h;
  for (i = 0; i < r->header_count; ++i, ++h) {
    *h = r->headers[i];
    CR_COPY(h->name, r->headers[i].name, h->name_len);
    CR_COPY(h->value, r->headers[i].value, h->value_len);
  }
  c->cookies = h;
  for (i = 0; i < r->cookie_count; ++i, ++h) {
    *h = r->cookies[i];
    CR_COPY(h->name, r->cookies[i].name, h->name_len);
    CR_COPY(h->value, r->cookies[i].value, h->value_len);
  }
#undef CR_COPY
  return c;
}

/* Waits on the network: the GVL is released meanwhile, and the request read then is a copy
 * of its own. */
static VALUE router_route_wait(VALUE self, VALUE method, VALUE host, VALUE path, VALUE query,
                               VALUE headers, VALUE cookies, VALUE timeout_ms) {
  request_box b;
  wait_call c;
  cr_decision *d = NULL;
  cr_request *owned;
  cr_router *r = get_router(self);
  int64_t timeout = NUM2LL(timeout_ms);
  /* What may raise comes first, as in router_route. */
  VALUE obj = wrap_decision(NULL);
  build_request(&b, method, host, path, query, headers, cookies);
  owned = copy_request(&b.req);
  free_request(&b);
  if (decision_take(&d) != CR_OK) {
    xfree(owned);
    raise_last();
  }
  c.out = d;
  c.router = r;
  c.req = owned;
  c.timeout_ms = timeout;
  c.rc = CR_OK;
  rb_thread_call_without_gvl(route_wait_nogvl, &c, RUBY_UBF_IO, NULL);
  xfree(owned);
  if (c.rc != CR_OK) {
    decision_give_back(d);
    raise_last();
  }
  DATA_PTR(obj) = d;
  return obj;
}

static VALUE router_explain(VALUE self, VALUE method, VALUE host, VALUE path, VALUE query,
                            VALUE headers, VALUE cookies) {
  request_box b;
  char *json = NULL;
  int rc;
  build_request(&b, method, host, path, query, headers, cookies);
  rc = cr_router_explain(&json, get_router(self), &b.req);
  free_request(&b);
  if (rc != CR_OK) raise_last();
  return take_string(json);
}

static VALUE router_status(VALUE self) {
  char *json = NULL;
  if (cr_router_status(&json, get_router(self)) != CR_OK) raise_last();
  return take_string(json);
}

static VALUE router_after_fork(VALUE self) {
  router_box *b = get_box(self);
  if (cr_router_after_fork(b->router) != CR_OK) raise_last();
  b->generation = fork_generation;
  return Qnil;
}

/* ---- tokens ------------------------------------------------------------------------------ */

static VALUE token_decode(VALUE mod, VALUE token) {
  char *json = NULL;
  StringValue(token);
  if (cr_token_decode(&json, RSTRING_PTR(token), (size_t)RSTRING_LEN(token)) != CR_OK) {
    raise_last();
  }
  return take_string(json);
}

/* _encode([[key, value], ...], prefix, random_or_nil) */
static VALUE token_encode(VALUE mod, VALUE fields, VALUE prefix, VALUE random) {
  long i, n;
  const char **keys;
  int64_t *values;
  char *token = NULL;
  int rc;
  VALUE keys_buffer, values_buffer;
  Check_Type(fields, T_ARRAY);
  StringValue(prefix);
  n = RARRAY_LEN(fields);
  /* Buffers the GC frees if a conversion below raises (a key with a NUL byte, a value past
   * 64 bits). */
  keys = ALLOCV_N(const char *, keys_buffer, n > 0 ? n : 1);
  values = ALLOCV_N(int64_t, values_buffer, n > 0 ? n : 1);
  for (i = 0; i < n; ++i) {
    VALUE kv = rb_ary_entry(fields, i);
    VALUE k = rb_String(rb_ary_entry(kv, 0));
    rb_ary_store(kv, 0, k); /* keep the string referenced */
    keys[i] = StringValueCStr(k);
    values[i] = NUM2LL(rb_ary_entry(kv, 1));
  }
  if (!NIL_P(random)) {
    StringValue(random);
    if (RSTRING_LEN(random) != 16) rb_raise(eByCode[1], "random must be 16 bytes");
  }
  rc = cr_token_encode(&token, StringValueCStr(prefix), keys, values, (size_t)n,
                       NIL_P(random) ? NULL : (const uint8_t *)RSTRING_PTR(random));
  ALLOCV_END(keys_buffer);
  ALLOCV_END(values_buffer);
  RB_GC_GUARD(fields);
  if (rc != CR_OK) raise_last();
  return take_string(token);
}

void Init_cellroute(void) {
  VALUE mToken;
  mCellroute = rb_define_module("Cellroute");
  eError = rb_define_class_under(mCellroute, "Error", rb_eStandardError);
  eByCode[0] = eError;
  eByCode[1] = rb_define_class_under(mCellroute, "InvalidError", eError);
  eByCode[2] = rb_define_class_under(mCellroute, "NotFoundError", eError);
  eByCode[3] = rb_define_class_under(mCellroute, "UnavailableError", eError);
  eByCode[4] = rb_define_class_under(mCellroute, "TimeoutError", eError);
  eByCode[5] = rb_define_class_under(mCellroute, "OutOfMemoryError", eError);
  eByCode[6] = rb_define_class_under(mCellroute, "InternalError", eError);
  rb_define_const(mCellroute, "NATIVE_VERSION", rb_str_new_cstr(cr_version()));

  cNativeRouter = rb_define_class_under(mCellroute, "NativeRouter", rb_cObject);
  rb_define_alloc_func(cNativeRouter, router_alloc);
  rb_define_method(cNativeRouter, "initialize", router_initialize, 2);
  rb_define_method(cNativeRouter, "route", router_route, 6);
  rb_define_method(cNativeRouter, "route_wait", router_route_wait, 7);
  rb_define_method(cNativeRouter, "explain", router_explain, 6);
  rb_define_method(cNativeRouter, "status", router_status, 0);
  rb_define_method(cNativeRouter, "reload", router_reload, 1);
  rb_define_method(cNativeRouter, "metrics", router_metrics, 0);
  rb_define_method(cNativeRouter, "after_fork", router_after_fork, 0);

  cEventQueue = rb_define_class_under(mCellroute, "EventQueue", rb_cObject);
  rb_define_alloc_func(cEventQueue, queue_alloc);
  rb_define_method(cEventQueue, "pop", queue_pop, 0);
  rb_define_method(cEventQueue, "close", queue_close_m, 0);
  rb_define_method(cEventQueue, "after_fork", queue_after_fork, 0);

  cDecision = rb_define_class_under(mCellroute, "Decision", rb_cObject);
  rb_undef_alloc_func(cDecision);
  rb_define_method(cDecision, "rule", decision_rule, 0);
  rb_define_method(cDecision, "result", decision_result, 0);
  rb_define_method(cDecision, "action", decision_action, 0);
  rb_define_method(cDecision, "type", decision_type_, 0);
  rb_define_method(cDecision, "value", decision_value, 0);
  rb_define_method(cDecision, "cell_id", decision_cell_id, 0);
  rb_define_method(cDecision, "address", decision_address, 0);
  rb_define_method(cDecision, "source", decision_source, 0);
  rb_define_method(cDecision, "fallback", decision_fallback, 0);
  rb_define_method(cDecision, "reason", decision_reason, 0);
  rb_define_method(cDecision, "age_ms", decision_age_ms, 0);
  rb_define_method(cDecision, "to_json", decision_to_json, 0);

  mToken = rb_define_module_under(mCellroute, "Token");
  rb_define_singleton_method(mCellroute, "fork_generation", cellroute_fork_generation, 0);
  /* Without it a forked child would route through its parent's client: refuse to load. */
  if (pthread_atfork(NULL, NULL, count_fork) != 0) {
    rb_raise(eError, "cellroute: cannot register its fork handler (out of memory)");
  }
  rb_define_singleton_method(mToken, "_decode", token_decode, 1);
  rb_define_singleton_method(mToken, "_encode", token_encode, 3);
}
