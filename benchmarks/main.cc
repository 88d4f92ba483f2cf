// cellroute's benchmarks. CELLROUTE_BENCH_SHORT=1 picks small sizes (CI runs that so the
// benchmarks never rot; timing never fails a run). scripts/bench-ratios turns the JSON output
// into the table of ratios against the baselines.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>

namespace cellroute::bench {
void RegisterRuleBenchmarks(bool short_mode);
void RegisterTableBenchmarks(bool short_mode);
void RegisterBindingBenchmarks();
}  // namespace cellroute::bench

int main(int argc, char** argv) {
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
