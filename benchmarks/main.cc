// cellroute's benchmarks. CELLROUTE_BENCH_SHORT=1 picks small sizes (CI runs that so the
// benchmarks never rot; timing never fails a run). scripts/bench-ratios turns the JSON output
// into the table of ratios against the baselines.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace cellroute::bench {
void RegisterRuleBenchmarks(bool short_mode);
void RegisterTableBenchmarks(bool short_mode);
void RegisterBindingBenchmarks();
// `count` classifications of the request mix by "cellroute" (its outcome not recording
// variables, as the C API routes), "cellroute-variables" (recording them), "handwritten" or
// "baseline" (RE2) with `rules` rules (0: the default set); returns the sum of the rules chosen.
long ClassifyOnly(std::string_view what, int rules, std::size_t count);
// `count` decisions of the request mix on the default rules, by the router ("cellroute",
// counting on, not recording variables, as Route/cellroute) or by hand ("handwritten"); returns
// the sum of the cell ids.
long RouteOnly(std::string_view what, std::size_t count);
}  // namespace cellroute::bench

int main(int argc, char** argv) {
  // --classify-only WHAT RULES COUNT: no benchmark, only the classifications, for
  // scripts/bench-instructions to count under callgrind (run with COUNT and with 0).
  if (argc == 5 && std::strcmp(argv[1], "--classify-only") == 0) {
    std::string_view what = argv[2];
    if (what != "cellroute" && what != "cellroute-variables" && what != "handwritten" &&
        what != "baseline") {
      std::fprintf(stderr,
                   "--classify-only: WHAT is cellroute, cellroute-variables, handwritten or "
                   "baseline\n");
      return 2;
    }
    std::printf("%ld\n", cellroute::bench::ClassifyOnly(what, std::atoi(argv[3]),
                                                        std::strtoull(argv[4], nullptr, 10)));
    return 0;
  }
  // --route-only WHAT COUNT: the same for whole decisions.
  if (argc == 4 && std::strcmp(argv[1], "--route-only") == 0) {
    std::string_view what = argv[2];
    if (what != "cellroute" && what != "handwritten") {
      std::fprintf(stderr, "--route-only: WHAT is cellroute or handwritten\n");
      return 2;
    }
    std::printf("%ld\n", cellroute::bench::RouteOnly(what, std::strtoull(argv[3], nullptr, 10)));
    return 0;
  }
  const char* env = std::getenv("CELLROUTE_BENCH_SHORT");
  bool short_mode = env != nullptr && std::strcmp(env, "0") != 0;
  cellroute::bench::RegisterRuleBenchmarks(short_mode);
  cellroute::bench::RegisterTableBenchmarks(short_mode);
  cellroute::bench::RegisterBindingBenchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
