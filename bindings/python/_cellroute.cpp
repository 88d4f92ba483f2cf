// The native shim of the Python binding: the C++ API one to one, thin. The idioms (keyword
// arguments, exception classes, parsed JSON) live in the pure-Python package `cellroute`.
#include <cellroute/router.h>
#include <cellroute/table.h>
#include <cellroute/token.h>
#include <cellroute/topology_service.h>
#include <cellroute/version.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <unistd.h>

#include <cmath>

namespace py = pybind11;

namespace {

// Raised by the shim, turned into the package's exception class for its code by the mapper
// the package installs at import.
struct CodedError {
  int code;
  std::string message;
};
// A strong reference never released: a global py::object would be destroyed by the C
// runtime's exit handlers after the interpreter is gone, and decrementing then aborts.
py::handle g_error_mapper;

[[noreturn]] void Raise(const cellroute::Status& s) {
  throw CodedError{static_cast<int>(s.code()), s.message()};
}

// Text for Python from bytes cellroute holds: request values a transform decoded may be any
// bytes, so what is not UTF-8 is replaced (U+FFFD) instead of raising UnicodeDecodeError.
py::str Str(std::string_view s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
  if (o == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(o);
}

std::string_view Utf8(py::handle h, const char* what) {
  Py_ssize_t n = 0;
  const char* p = PyUnicode_AsUTF8AndSize(h.ptr(), &n);
  if (p == nullptr) {
    PyErr_Clear();
    throw py::type_error(std::string(what) + " must be str");
  }
  return {p, static_cast<std::size_t>(n)};
}

// Name/value pairs from a dict or an iterable of pairs, viewing the Python strings.
void Pairs(py::handle obj, std::vector<cellroute::Header>* out, const char* what) {
  out->clear();
  if (obj.is_none()) return;
  if (PyDict_Check(obj.ptr())) {
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(obj.ptr(), &pos, &k, &v)) out->push_back({Utf8(k, what), Utf8(v, what)});
    return;
  }
  for (py::handle item : obj) {
    py::tuple t = py::reinterpret_borrow<py::tuple>(item);
    if (!PyTuple_Check(item.ptr()) || t.size() != 2) {
      throw py::type_error(std::string(what) + " must be a dict or (name, value) pairs");
    }
    out->push_back({Utf8(t[0], what), Utf8(t[1], what)});
  }
}

// Views into the caller's Python strings: only for calls that keep the GIL, during which
// nobody can change or free them.
struct RequestStorage {
  std::vector<cellroute::Header> headers, cookies;
  cellroute::RequestView view;
};

void Build(RequestStorage* s, py::handle method, py::handle host, py::handle path, py::handle query,
           py::handle headers, py::handle cookies) {
  s->view.method = Utf8(method, "method");
  s->view.host = Utf8(host, "host");
  s->view.path = Utf8(path, "path");
  s->view.query = Utf8(query, "query");
  Pairs(headers, &s->headers, "headers");
  Pairs(cookies, &s->cookies, "cookies");
  s->view.headers = s->headers;
  s->view.cookies = s->cookies;
}

// A copy of the request that owns every byte: for calls that release the GIL, while which
// another thread may replace a dict value and free the string a view would point into.
cellroute::Request Own(py::handle method, py::handle host, py::handle path, py::handle query,
                       py::handle headers, py::handle cookies) {
  RequestStorage views;
  Build(&views, method, host, path, query, headers, cookies);
  cellroute::Request r;
  r.method = std::string(views.view.method);
  r.host = std::string(views.view.host);
  r.path = std::string(views.view.path);
  r.query = std::string(views.view.query);
  for (const auto& h : views.headers) r.AddHeader(std::string(h.name), std::string(h.value));
  for (const auto& c : views.cookies) r.AddCookie(std::string(c.name), std::string(c.value));
  return r;
}

// Many requests copied into one buffer (a few allocations per batch, not several per
// request): Add records offsets while the buffer grows, Seal turns them into views.
struct BatchCopy {
  struct Span {
    std::size_t offset, size;
  };
  struct Pending {
    Span method, host, path, query;
    std::size_t headers, nheaders, cookies, ncookies;  // into `pairs`
  };
  std::string bytes;
  std::vector<std::pair<Span, Span>> pairs;
  std::vector<Pending> pending;
  std::vector<cellroute::Header> headers;
  std::vector<cellroute::RequestView> requests;

  Span Put(std::string_view s) {
    Span at{bytes.size(), s.size()};
    bytes.append(s);
    return at;
  }
  void Add(const cellroute::RequestView& v) {
    Pending p{Put(v.method), Put(v.host), Put(v.path), Put(v.query), pairs.size(),
              v.headers.size(), 0, v.cookies.size()};
    for (const auto& h : v.headers) pairs.push_back({Put(h.name), Put(h.value)});
    p.cookies = pairs.size();
    for (const auto& c : v.cookies) pairs.push_back({Put(c.name), Put(c.value)});
    pending.push_back(p);
  }
  void Seal() {
    auto view = [&](Span s) { return std::string_view(bytes).substr(s.offset, s.size); };
    headers.reserve(pairs.size());
    for (const auto& [name, value] : pairs) headers.push_back({view(name), view(value)});
    requests.reserve(pending.size());
    for (const Pending& p : pending) {
      cellroute::RequestView r;
      r.method = view(p.method);
      r.host = view(p.host);
      r.path = view(p.path);
      r.query = view(p.query);
      r.headers = std::span<const cellroute::Header>(headers).subspan(p.headers, p.nheaders);
      r.cookies = std::span<const cellroute::Header>(headers).subspan(p.cookies, p.ncookies);
      requests.push_back(r);
    }
  }
};

// True while Python can still run code: a cellroute thread must not take the GIL once the
// interpreter is finalizing (it would be stopped mid-call).
bool PythonAlive() { return Py_IsInitialized() && !_Py_IsFinalizing(); }

// The embedder's event callback, called on the event log's thread with the GIL taken, given
// the event as a dict. Its exceptions go to sys.unraisablehook, as a callback's should. The
// function object is released under the GIL too, wherever the last copy of the callback goes.
cellroute::EventCallback EventCallbackFor(py::handle fn) {
  if (!PyCallable_Check(fn.ptr())) {
    throw py::type_error(std::string("on_event must be callable, not ") + Py_TYPE(fn.ptr())->tp_name);
  }
  std::shared_ptr<py::object> held(new py::object(py::reinterpret_borrow<py::object>(fn)),
                                   [](py::object* o) {
                                     if (PythonAlive()) {
                                       py::gil_scoped_acquire gil;
                                       delete o;
                                     } else {
                                       o->release();  // too late to decrement: leaked
                                       delete o;
                                     }
                                   });
  return [held](const cellroute::Event& e) {
    if (!PythonAlive()) return;
    std::string json = e.ToJson();
    py::gil_scoped_acquire gil;
    try {
      (*held)(py::module_::import("json").attr("loads")(json));
    } catch (py::error_already_set& err) {
      err.discard_as_unraisable("cellroute on_event callback");
    }
  };
}

std::chrono::milliseconds WaitMs(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) {
    throw py::value_error("wait must be a finite number of seconds >= 0");
  }
  constexpr double kMaxSeconds = 24.0 * 3600;  // a wait is bounded by the fetch's own deadline
  return std::chrono::milliseconds(
      static_cast<std::int64_t>(std::min(seconds, kMaxSeconds) * 1000));
}

// A new Python Decision that owns `d`. py::cast would look the type up by its std::type_index
// (hashing and comparing its name) for every object; here that is done once.
py::object Adopt(std::unique_ptr<cellroute::Decision> d) {
  static const py::detail::type_info* const type =
      py::detail::get_type_info(typeid(cellroute::Decision), /*throw_if_missing=*/true);
  py::handle o = py::detail::type_caster_generic::cast(
      d.get(), py::return_value_policy::take_ownership, py::handle(), type, nullptr, nullptr);
  if (!o) throw py::error_already_set();
  d.release();  // the object owns it now
  return py::reinterpret_steal<py::object>(o);
}

class NativeRouter {
 public:
  NativeRouter(const py::dict& cfg) {
    config_ = ConfigFrom(cfg);
    if (cfg.contains("on_event") && !cfg["on_event"].is_none()) {
      config_.on_event = EventCallbackFor(cfg["on_event"]);
    }
    cellroute::Result<cellroute::BuiltRouter> built =
        cellroute::Status::Invalid("router not built");
    {
      py::gil_scoped_release unlocked;  // waits (bounded) for the service's first answer
      built = cellroute::BuildRouter(config_);
    }
    if (!built.ok()) Raise(built.status());
    built_.emplace(std::move(built).value());
    pid_ = getpid();
  }

  // The event log's thread takes the GIL to call back: it must not be waited for while this
  // thread holds it.
  ~NativeRouter() {
    if (!built_) return;
    py::gil_scoped_release unlocked;
    built_.reset();
  }
  NativeRouter(const NativeRouter&) = delete;
  NativeRouter& operator=(const NativeRouter&) = delete;

  // Delivers the events queued and stops the event log (at exit, before the interpreter goes).
  void CloseEvents() {
    if (!built_ || !built_->events || pid_ != getpid()) return;
    py::gil_scoped_release unlocked;
    built_->events->Close();
  }

  // Routes into the Decision this router returned last when nothing else can see it any more
  // (only this router holds a reference, and no weak reference exists): a call that drops its
  // decision before the next one then allocates nothing and skips pybind11's type lookup, a
  // fifth of a call. Otherwise routes into a new Decision object (never copies a routed one).
  // The GIL, held throughout and not given up between the check and the routing, guards the
  // spare.
  py::object Route(py::handle method, py::handle host, py::handle path, py::handle query,
                   py::handle headers, py::handle cookies) {
    thread_local RequestStorage s;
    Build(&s, method, host, path, query, headers, cookies);
    if (spare_ && Py_REFCNT(spare_.ptr()) == 1 &&
        reinterpret_cast<py::detail::instance*>(spare_.ptr())->weakrefs == nullptr) {
      router().Route(s.view, spare_decision_);
      return spare_;
    }
    auto d = std::make_unique<cellroute::Decision>();
    router().Route(s.view, d.get());
    cellroute::Decision* routed = d.get();
    spare_ = Adopt(std::move(d));
    spare_decision_ = routed;
    return spare_;
  }

  cellroute::Decision RouteWait(py::handle method, py::handle host, py::handle path,
                                py::handle query, py::handle headers, py::handle cookies,
                                double timeout) {
    auto wait = WaitMs(timeout);
    cellroute::Request owned = Own(method, host, path, query, headers, cookies);
    py::gil_scoped_release unlocked;  // may wait on the network; `owned` is ours alone
    return router().RouteWait(owned.view(), wait);
  }

  // requests: mappings with route()'s keywords (method, host, path, query, headers,
  // cookies). Every byte is copied into one buffer while the GIL is held; then the GIL is
  // released once and the whole batch routes from that copy, which no Python thread can touch.
  py::list RouteBatch(const py::list& requests) {
    BatchCopy copy;
    copy.requests.reserve(requests.size());
    thread_local RequestStorage s;
    // The keys and defaults, made once per batch: a key given as a C string would be a new str,
    // hashed anew, for every field of every request.
    const py::str keys[] = {"method", "host", "path", "query", "headers", "cookies"};
    const py::object defaults[] = {py::str("GET"), py::str(""), py::str("/"),
                                   py::str(""),    py::none(),  py::none()};
    for (py::handle item : requests) {
      // Every field is held in `fields` until the request is copied: `s` views the bytes of
      // these objects.
      auto field = [&](std::size_t k) -> py::object {
        if (!PyDict_Check(item.ptr())) return item.attr("get")(keys[k], defaults[k]);
        PyObject* v = PyDict_GetItemWithError(item.ptr(), keys[k].ptr());  // borrowed
        if (v == nullptr && PyErr_Occurred()) throw py::error_already_set();
        return v == nullptr ? defaults[k] : py::reinterpret_borrow<py::object>(v);
      };
      // (Mapping is looked up each time a request is not a dict: a static py::object would be
      // released after the interpreter is gone.)
      if (!PyDict_Check(item.ptr()) &&
          !py::isinstance(item, py::module_::import("collections.abc").attr("Mapping"))) {
        throw py::type_error(std::string("route_batch: each request must be a mapping, not ") +
                             Py_TYPE(item.ptr())->tp_name);
      }
      const py::object fields[] = {field(0), field(1), field(2), field(3), field(4), field(5)};
      Build(&s, fields[0], fields[1], fields[2], fields[3], fields[4], fields[5]);
      if (s.view.query.empty()) {  // "path?query", as route() splits it
        std::size_t q = s.view.path.find('?');
        if (q != std::string_view::npos) {
          s.view.query = s.view.path.substr(q + 1);
          s.view.path = s.view.path.substr(0, q);
        }
      }
      copy.Add(s.view);
    }
    copy.Seal();
    // The Decision objects are made first and routed into in place: no second copy of each
    // (a Decision is a few KiB). No other thread can reach them until the list is returned.
    const std::size_t n = copy.requests.size();
    std::vector<py::object> objects(n);
    std::vector<cellroute::Decision*> slots(n);
    for (std::size_t i = 0; i < n; ++i) {
      auto d = std::make_unique<cellroute::Decision>();
      slots[i] = d.get();
      objects[i] = Adopt(std::move(d));
    }
    {
      py::gil_scoped_release unlocked;  // every byte read from here on is in `copy`
      for (std::size_t i = 0; i < n; ++i) router().Route(copy.requests[i], slots[i]);
    }
    py::list out(n);
    for (std::size_t i = 0; i < n; ++i) out[i] = std::move(objects[i]);
    return out;
  }

  std::string Explain(py::handle method, py::handle host, py::handle path, py::handle query,
                      py::handle headers, py::handle cookies) {
    RequestStorage s;
    Build(&s, method, host, path, query, headers, cookies);
    return router().Explain(s.view).ToJson();
  }

  // The keywords of Router(...) as a configuration.
  static cellroute::RouterConfig ConfigFrom(const py::dict& cfg) {
    auto text = [&](const char* k) -> std::optional<std::string> {
      if (!cfg.contains(k) || cfg[k].is_none()) return std::nullopt;
      return std::string(Utf8(cfg[k], k));
    };
    auto path = [&](const char* k) { return text(k).value_or(std::string()); };
    cellroute::RouterConfig c;
    c.rules_path = path("rules_path");
    c.rules_text = text("rules_text");
    c.topology_path = path("topology_path");
    c.topology_text = text("topology_text");
    c.claims_path = path("claims_path");
    c.claims_text = text("claims_text");
    c.service.address = path("topology_service");
    c.service.ca_file = path("tls_ca");
    c.service.cert_file = path("tls_cert");
    c.service.key_file = path("tls_key");
    c.service.server_name = path("tls_server_name");
    c.service.snapshot_path = path("snapshot_path");
    if (cfg.contains("metadata") && !cfg["metadata"].is_none()) {
      std::vector<cellroute::Header> pairs;
      Pairs(cfg["metadata"], &pairs, "metadata");
      for (const auto& kv : pairs) c.service.metadata.emplace_back(kv.name, kv.value);
    }
    return c;
  }

  // Loads everything the keywords name and swaps it in at once, or raises and changes nothing.
  // The files are read with the GIL released, from a configuration this call owns.
  void Reload(const py::dict& cfg) {
    cellroute::RouterConfig next = ConfigFrom(cfg);
    cellroute::Status st = cellroute::Status::Ok();
    {
      py::gil_scoped_release unlocked;
      st = cellroute::ReloadRouter(&*built_, next);
    }
    if (!st.ok()) Raise(st);
    config_ = std::move(next);
  }

  std::string Metrics() const { return router().Metrics(); }

  std::string Status() { return built_->StatusJson(); }

  // In a child after fork (os.register_at_fork calls this): the parent's Topology Service
  // client did not survive; a new one starts here.
  void AfterFork() {
    if (pid_ == getpid()) return;
    cellroute::Status st = cellroute::Status::Ok();
    {
      py::gil_scoped_release unlocked;
      st = cellroute::RebuildAfterFork(&*built_, config_);
    }
    if (!st.ok()) Raise(st);
    pid_ = getpid();
  }

 private:
  const cellroute::Router& router() const { return built_->router; }
  cellroute::RouterConfig config_;
  std::optional<cellroute::BuiltRouter> built_;
  pid_t pid_ = 0;
  py::object spare_;  // the last Decision Route returned, and the C++ object it owns
  cellroute::Decision* spare_decision_ = nullptr;
};

std::string ResultName(const cellroute::Decision& d) {
  return d.rejected() ? "rejected" : d.outcome().matched() ? "matched" : "no_match";
}

}  // namespace

PYBIND11_MODULE(_cellroute, m) {
  m.doc() = "cellroute's native shim; use the `cellroute` package";
  m.attr("__version__") = CR_VERSION_STRING;
  m.def("_set_error_mapper", [](py::object fn) {
    py::handle old = g_error_mapper;
    g_error_mapper = fn.release();
    old.dec_ref();
  });
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const CodedError& e) {
      py::object exc = g_error_mapper
                           ? g_error_mapper(e.code, e.message)
                           : py::reinterpret_borrow<py::object>(PyExc_RuntimeError)(e.message);
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
    }
  });

  using cellroute::Decision;
  py::class_<Decision>(m, "Decision",
                      "One routing decision. It owns everything it shows: it stays valid after "
                      "its router is gone.")
      .def_property_readonly(
          "rule", [](const Decision& d) { return Str(d.rule_id()); },
          "The id of the rule that decided, or \"\" when none matched.")
      .def_property_readonly("result", &ResultName,
                             "\"matched\", \"no_match\" or \"rejected\" (malformed input: answer 400).")
      .def_property_readonly(
          "action", [](const Decision& d) { return Str(d.action_header()); },
          "The X-GitLab-HTTP-Router-Rule-Action value (\"classify\", \"proxy\").")
      .def_property_readonly(
          "type", [](const Decision& d) { return Str(d.type_header()); },
          "The X-GitLab-HTTP-Router-Rule-Type value (the classification type).")
      .def_property_readonly(
          "value", [](const Decision& d) { return Str(d.value()); },
          "The classification value, rendered from the rule's template.")
      .def_property_readonly("cell_id",
                             [](const Decision& d) -> py::object {
                               if (d.cell_id() == 0) return py::none();
                               return py::int_(d.cell_id());
                             },
                             "The id of the cell chosen, or None.")
      .def_property_readonly(
          "address", [](const Decision& d) { return Str(d.address()); },
          "Where to send the request: the cell's host:port, or a proxy address.")
      .def_property_readonly(
          "source", [](const Decision& d) { return Str(cellroute::SourceName(d.source())); },
          "What the cell came from: cell_list, claims_file, route_table, proxy, legacy...")
      .def_property_readonly("fallback",
                             [](const Decision& d) -> py::object {
                               if (d.fallback() == cellroute::Fallback::kNone) return py::none();
                               return Str(cellroute::FallbackName(d.fallback()));
                             },
                             "Why the legacy cell was used (no_rule_matched, unknown_claim, "
                             "unavailable, pending...), or None.")
      .def_property_readonly(
          "reason", [](const Decision& d) { return Str(d.outcome().reason()); },
          "Why the request was rejected, or \"\".")
      .def_property_readonly(
          "age_ms", [](const Decision& d) { return d.resolution().age_ms; },
          "How old the route table's answer was, in milliseconds (0 when not from it).")
      .def_property_readonly("variables",
                             [](const Decision& d) {
                               py::dict vars;
                               for (std::size_t i = 0; i < d.outcome().variable_count(); ++i) {
                                 auto v = d.outcome().variable(i);
                                 vars[Str(v.name)] = Str(v.value);
                               }
                               return vars;
                             },
                             "The variables the rule captured, by name.")
      .def(
          "to_json", [](const Decision& d) { return Str(d.ToJson()); },
          "The whole decision as a JSON object, as the CLI prints it.")
      .def(
          "to_dict",
          [](const Decision& d) { return py::module_::import("json").attr("loads")(Str(d.ToJson())); },
          "The whole decision as a dict (the fields of to_json()).")
      .def(
          "__eq__",
          [](const Decision& a, py::object b) -> py::object {
            if (!py::isinstance<Decision>(b)) return py::reinterpret_borrow<py::object>(Py_NotImplemented);
            return py::bool_(a.ToJson() == b.cast<const Decision&>().ToJson());
          },
          "Equal when every field shown (to_dict()) is equal.")
      .def("__hash__", [](const Decision& d) { return py::hash(Str(d.ToJson())); })
      .def("__repr__", [](const Decision& d) {
        std::string s = "<Decision rule=" + std::string(d.rule_id().empty() ? "-" : d.rule_id()) +
                        " " + ResultName(d);
        if (!d.type_header().empty())
          s += " " + std::string(d.type_header()) + "=" + std::string(d.value());
        s += " cell=" + (d.cell_id() ? std::to_string(d.cell_id()) : std::string("-")) + " " +
             std::string(d.address()) + " source=" + std::string(cellroute::SourceName(d.source()));
        if (d.fallback() != cellroute::Fallback::kNone) {
          s += " fallback=" + std::string(cellroute::FallbackName(d.fallback()));
        }
        return Str(s + ">");
      });

  py::class_<NativeRouter>(m, "NativeRouter")
      .def(py::init<const py::dict&>())
      .def("route", &NativeRouter::Route)
      .def("route_wait", &NativeRouter::RouteWait)
      .def("route_batch", &NativeRouter::RouteBatch)
      .def("explain", &NativeRouter::Explain)
      .def("status", &NativeRouter::Status)
      .def("reload", &NativeRouter::Reload)
      .def("metrics", &NativeRouter::Metrics)
      .def("after_fork", &NativeRouter::AfterFork)
      .def("close_events", &NativeRouter::CloseEvents);

  m.def("token_decode", [](py::handle token) {
    auto p = cellroute::token::Decode(Utf8(token, "token"));
    if (!p.ok()) Raise(p.status());
    py::dict out;
    for (const auto& f : p->fields()) out[Str(f.key())] = f.value;
    return out;
  });
  m.def("token_encode", [](const std::vector<std::pair<std::string, int64_t>>& fields,
                           const std::string& prefix, py::object random) {
    cellroute::token::EncodeOptions opt;
    opt.prefix = prefix;
    opt.fields = fields;
    if (!random.is_none()) {
      if (!PyBytes_Check(random.ptr())) throw py::type_error("random must be bytes");
      std::string bytes = random.cast<py::bytes>();
      if (bytes.size() != cellroute::token::kRandomBytes) {
        Raise(cellroute::Status::Invalid("random must be 16 bytes"));
      }
      std::array<std::uint8_t, cellroute::token::kRandomBytes> r{};
      std::memcpy(r.data(), bytes.data(), r.size());
      opt.random = r;
    }
    auto t = cellroute::token::Encode(opt);
    if (!t.ok()) Raise(t.status());
    return t.value();
  });
}
