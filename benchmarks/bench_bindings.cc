// Per-call cost of the C API against the C++ call it wraps, on one fixed request (a session
// cookie page). The Python and Ruby figures come from overhead.py and overhead.rb, which route
// the same request; `make bench` prints all of them.
#include <benchmark/benchmark.h>
#include <cellroute.h>

#include <cstring>

#include "workload.h"

namespace cellroute::bench {

namespace {

constexpr const char* kPath = "/dashboard/projects";
constexpr const char* kCookie = "preferred_language=en; _gitlab_session=cell-2-0a1b2c3d4e5f";

void BM_RouteOne_cpp(benchmark::State& state) {
  Router router = Router::FromDefaults().value();
  Header headers[] = {{"Cookie", kCookie}};
  RequestView req;
  req.method = "GET";
  req.path = kPath;
  req.headers = headers;
  Decision d;
  for (auto _ : state) {
    router.Route(req, &d);
    benchmark::DoNotOptimize(d.cell_id());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_RouteOne_capi(benchmark::State& state) {
  cr_router* router = nullptr;
  cr_decision* d = nullptr;
  cr_router_new(&router, nullptr);
  cr_decision_new(&d);
  cr_header headers[] = {{"Cookie", 6, kCookie, std::strlen(kCookie)}};
  cr_request req = CR_REQUEST_INIT;
  req.method = "GET";
  req.method_len = 3;
  req.path = kPath;
  req.path_len = std::strlen(kPath);
  req.headers = headers;
  req.header_count = 1;
  for (auto _ : state) {
    cr_router_route(d, router, &req);
    benchmark::DoNotOptimize(cr_decision_cell_id(d));
  }
  state.SetItemsProcessed(state.iterations());
  cr_decision_free(d);
  cr_router_free(router);
}

}  // namespace

void RegisterBindingBenchmarks() {
  // Named so that bench-ratios pairs them: the C API against the C++ call as its baseline.
  benchmark::RegisterBenchmark("RouteOne/cellroute-capi", BM_RouteOne_capi);
  benchmark::RegisterBenchmark("RouteOne/baseline-cpp", BM_RouteOne_cpp);
}

}  // namespace cellroute::bench
