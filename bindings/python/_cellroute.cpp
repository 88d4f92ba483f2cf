// The native shim of the Python binding: the C++ API one to one, thin. The idioms (keyword
// arguments, exception classes, parsed JSON) live in the pure-Python package `cellroute`.
#include <cellroute/router.h>
#include <cellroute/table.h>
#include <cellroute/token.h>
#include <cellroute/topology_service.h>
#include <cellroute/version.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;

namespace {

// Raised by the shim, turned into the package's exception class for its code by the mapper
// the package installs at import.
struct CodedError {
  int code;
  std::string message;
};
py::object g_error_mapper;

[[noreturn]] void Raise(const cellroute::Status& s) {
  throw CodedError{static_cast<int>(s.code()), s.message()};
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

class NativeRouter {
 public:
  NativeRouter(const py::dict& cfg) {
    auto get = [&](const char* k) {
      return cfg.contains(k) && !cfg[k].is_none() ? cfg[k].cast<std::string>() : std::string();
    };
    cellroute::RouterConfig c;
    c.rules_path = get("rules_path");
    c.rules_text = get("rules_text");
    c.topology_path = get("topology_path");
    c.topology_text = get("topology_text");
    c.claims_path = get("claims_path");
    c.claims_text = get("claims_text");
    c.service.address = get("topology_service");
    c.service.ca_file = get("tls_ca");
    c.service.cert_file = get("tls_cert");
    c.service.key_file = get("tls_key");
    c.service.server_name = get("tls_server_name");
    c.service.snapshot_path = get("snapshot_path");
    if (cfg.contains("metadata") && !cfg["metadata"].is_none()) {
      for (auto item : cfg["metadata"].cast<py::dict>()) {
        c.service.metadata.emplace_back(item.first.cast<std::string>(),
                                        item.second.cast<std::string>());
      }
    }
    cellroute::Result<cellroute::BuiltRouter> built =
        cellroute::Status::Invalid("router not built");
    {
      py::gil_scoped_release unlocked;  // polls the service once when there is one
      built = cellroute::BuildRouter(c);
    }
    if (!built.ok()) Raise(built.status());
    router_.emplace(std::move(built.value().router));
    client_ = std::move(built.value().client);
  }

  cellroute::Decision Route(py::handle method, py::handle host, py::handle path, py::handle query,
                            py::handle headers, py::handle cookies) {
    thread_local RequestStorage s;
    Build(&s, method, host, path, query, headers, cookies);
    return router_->Route(s.view);
  }

  cellroute::Decision RouteWait(py::handle method, py::handle host, py::handle path,
                                py::handle query, py::handle headers, py::handle cookies,
                                double timeout) {
    RequestStorage s;
    Build(&s, method, host, path, query, headers, cookies);
    py::gil_scoped_release unlocked;  // may wait on the network
    return router_->RouteWait(s.view,
                              std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000)));
  }

  // requests: (method, host, path, query, headers, cookies) tuples.
  std::vector<cellroute::Decision> RouteBatch(const py::list& requests) {
    std::vector<RequestStorage> storage(requests.size());
    for (std::size_t i = 0; i < requests.size(); ++i) {
      py::tuple t = requests[i].cast<py::tuple>();
      Build(&storage[i], t[0], t[1], t[2], t[3], t[4], t[5]);
    }
    std::vector<cellroute::Decision> out(storage.size());
    {
      py::gil_scoped_release unlocked;  // the strings stay alive: `requests` holds them
      for (std::size_t i = 0; i < storage.size(); ++i) router_->Route(storage[i].view, &out[i]);
    }
    return out;
  }

  std::string Explain(py::handle method, py::handle host, py::handle path, py::handle query,
                      py::handle headers, py::handle cookies) {
    RequestStorage s;
    Build(&s, method, host, path, query, headers, cookies);
    return router_->Explain(s.view).ToJson();
  }

  std::string Status() {
    if (!client_) return "{\"state\":\"static\"}";
    return client_->status().ToJson();
  }

 private:
  std::optional<cellroute::Router> router_;
  std::shared_ptr<cellroute::TopologyServiceClient> client_;
};

std::string ResultName(const cellroute::Decision& d) {
  return d.rejected() ? "rejected" : d.outcome().matched() ? "matched" : "no_match";
}

}  // namespace

PYBIND11_MODULE(_cellroute, m) {
  m.doc() = "cellroute's native shim; use the `cellroute` package";
  m.attr("__version__") = std::to_string(CR_VERSION_MAJOR) + "." +
                          std::to_string(CR_VERSION_MINOR) + "." + std::to_string(CR_VERSION_PATCH);
  m.def("_set_error_mapper", [](py::object fn) { g_error_mapper = std::move(fn); });
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

  py::class_<cellroute::Decision>(m, "Decision")
      .def_property_readonly("rule",
                             [](const cellroute::Decision& d) { return std::string(d.rule_id()); })
      .def_property_readonly("result", &ResultName)
      .def_property_readonly(
          "action", [](const cellroute::Decision& d) { return std::string(d.action_header()); })
      .def_property_readonly(
          "type", [](const cellroute::Decision& d) { return std::string(d.type_header()); })
      .def_property_readonly("value",
                             [](const cellroute::Decision& d) { return std::string(d.value()); })
      .def_property_readonly("cell_id",
                             [](const cellroute::Decision& d) -> py::object {
                               if (d.cell_id() == 0) return py::none();
                               return py::int_(d.cell_id());
                             })
      .def_property_readonly("address",
                             [](const cellroute::Decision& d) { return std::string(d.address()); })
      .def_property_readonly("source",
                             [](const cellroute::Decision& d) {
                               return std::string(cellroute::SourceName(d.source()));
                             })
      .def_property_readonly("fallback",
                             [](const cellroute::Decision& d) -> py::object {
                               if (d.fallback() == cellroute::Fallback::kNone) return py::none();
                               return py::str(std::string(cellroute::FallbackName(d.fallback())));
                             })
      .def_property_readonly(
          "reason", [](const cellroute::Decision& d) { return std::string(d.outcome().reason()); })
      .def_property_readonly("age_ms",
                             [](const cellroute::Decision& d) { return d.resolution().age_ms; })
      .def_property_readonly("variables",
                             [](const cellroute::Decision& d) {
                               py::dict vars;
                               for (std::size_t i = 0; i < d.outcome().variable_count(); ++i) {
                                 auto v = d.outcome().variable(i);
                                 vars[py::str(std::string(v.name))] = std::string(v.value);
                               }
                               return vars;
                             })
      .def("to_json", &cellroute::Decision::ToJson)
      .def("__repr__", [](const cellroute::Decision& d) {
        std::string s = "<Decision rule=" + std::string(d.rule_id().empty() ? "-" : d.rule_id()) +
                        " " + ResultName(d);
        if (!d.type_header().empty())
          s += " " + std::string(d.type_header()) + "=" + std::string(d.value());
        s += " cell=" + (d.cell_id() ? std::to_string(d.cell_id()) : std::string("-")) + " " +
             std::string(d.address()) + " source=" + std::string(cellroute::SourceName(d.source()));
        if (d.fallback() != cellroute::Fallback::kNone) {
          s += " fallback=" + std::string(cellroute::FallbackName(d.fallback()));
        }
        return s + ">";
      });

  py::class_<NativeRouter>(m, "NativeRouter")
      .def(py::init<const py::dict&>())
      .def("route", &NativeRouter::Route)
      .def("route_wait", &NativeRouter::RouteWait)
      .def("route_batch", &NativeRouter::RouteBatch)
      .def("explain", &NativeRouter::Explain)
      .def("status", &NativeRouter::Status);

  m.def("token_decode", [](const std::string& token) {
    auto p = cellroute::token::Decode(token);
    if (!p.ok()) Raise(p.status());
    py::dict out;
    for (const auto& f : p->fields()) out[py::str(std::string(f.key()))] = f.value;
    return out;
  });
  m.def("token_encode", [](const std::vector<std::pair<std::string, int64_t>>& fields,
                           const std::string& prefix, py::object random) {
    cellroute::token::EncodeOptions opt;
    opt.prefix = prefix;
    opt.fields = fields;
    if (!random.is_none()) {
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
