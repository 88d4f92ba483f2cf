# The two commands a fresh Debian machine needs (as root, so the bootstrap can apt-get):
#   make demo   route the example requests with the embedded defaults
#   make test   build everything and run every test
BUILD      ?= build
GENERATOR  ?= Ninja
JOBS       ?= 2
comma      := ,
CMAKE_ARGS ?=
CELLROUTE   = $(BUILD)/tools/cellroute

.PHONY: all bootstrap configure build demo deb test test-tsan test-asan fuzz bench bench-short bench-bindings bench-nginx clean

all: build

bootstrap:
	@scripts/bootstrap

configure: bootstrap
	@cmake -S . -B $(BUILD) -G $(GENERATOR) -DCELLROUTE_DEVELOPER=ON \
	  -DPYTHON_EXECUTABLE=/usr/bin/python3 $(CMAKE_ARGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j$(JOBS)

# Builds only the CLI and the library it links, not the tests, benchmarks and bindings.
demo: configure
	@cmake --build $(BUILD) -j$(JOBS) --target cellroute_cli
	@$(CELLROUTE) route --table examples/requests.jsonl

# Debian packages (prefix /usr) of the build, in $(BUILD)/packages/: libcellroute0,
# libcellroute-dev, cellroute-tools. tests/install/deb.sh packages and installs them the same way.
deb: build
	@cpack -G DEB --config $(BUILD)/CPackConfig.cmake -B $(BUILD)/packages

test: build
	@ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)

# Benchmarks are run on purpose, never by `make test`. bench-short uses small sizes and few
# repetitions so that CI keeps them compiling and running; its timings mean little.
# Each prints the table of ratios and every goal of docs/performance.md as met or not met.
bench: build
	@$(MAKE) --no-print-directory bench-bindings N=200000 > $(BUILD)/bench-bindings.txt
	@$(BUILD)/benchmarks/cellroute_bench --benchmark_repetitions=5 \
	  --benchmark_enable_random_interleaving=true \
	  --benchmark_report_aggregates_only=true --benchmark_out=$(BUILD)/bench.json \
	  --benchmark_out_format=json
	@scripts/bench-ratios $(BUILD)/bench.json $(BUILD)/bench-bindings.txt
	@scripts/bench-instructions $(BUILD)/benchmarks/cellroute_bench

# Python and Ruby per-call cost on the request RouteOne times in C and C++.
N ?= 20000
bench-bindings: build
	@PYTHONPATH=$(BUILD)/bindings/python /usr/bin/python3 benchmarks/overhead.py $(N)
	@ruby -I $(BUILD)/bindings/ruby/lib -I bindings/ruby/lib benchmarks/overhead.rb $(N)

bench-short: build
	@$(MAKE) --no-print-directory bench-bindings > $(BUILD)/bench-bindings.txt
	@CELLROUTE_BENCH_SHORT=1 $(BUILD)/benchmarks/cellroute_bench --benchmark_min_time=0.05 \
	  --benchmark_out=$(BUILD)/bench-short.json --benchmark_out_format=json >/dev/null
	@scripts/bench-ratios $(BUILD)/bench-short.json $(BUILD)/bench-bindings.txt
	@scripts/bench-instructions $(BUILD)/benchmarks/cellroute_bench

# wrk against Debian's nginx routing the request mix: plain `map` configuration, the module on
# files, the module with the dev Topology Service (docs/performance.md). About 5 minutes.
NGINX_BENCH_ARGS ?=
bench-nginx: build
	@/usr/bin/python3 benchmarks/nginx_bench.py $(BUILD)/proxies/nginx/ngx_http_cellroute_module.so \
	  $(CELLROUTE) $(BUILD)/tools/cellroute-topology-server examples $(NGINX_BENCH_ARGS)

# The core's tests under a sanitizer, each in a build of its own: ThreadSanitizer for
# publication and grace periods, AddressSanitizer with UBSan for any read of freed memory and
# any undefined behaviour. The ASan run also covers the service client (gRPC itself is not
# instrumented, so TSan would only report gRPC's internals) and replays the fuzz corpora.
SANITIZED_TESTS = table_test rules_test router_test token_test topology_test events_test
ASAN_TESTS = $(SANITIZED_TESTS) service_client_test fuzzers
define sanitized
	@cmake -S . -B $(BUILD)-$(1) -G $(GENERATOR) -DCELLROUTE_BUILD_TESTS=ON \
	  -DCELLROUTE_WARNINGS_AS_ERRORS=ON -DCELLROUTE_SANITIZE=$(2) \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS) >/dev/null
	@cmake --build $(BUILD)-$(1) -j$(JOBS) --target $(3)
	@TSAN_OPTIONS="halt_on_error=1" ASAN_OPTIONS="detect_leaks=1" \
	  UBSAN_OPTIONS="halt_on_error=1 print_stacktrace=1" \
	  ctest --test-dir $(BUILD)-$(1) --output-on-failure -j$(JOBS) \
	  -R '^($(subst $(eval) ,|,$(3))):'
endef

test-tsan: bootstrap
	$(call sanitized,tsan,thread,$(SANITIZED_TESTS))

test-asan: bootstrap
	$(call sanitized,asan,address$(comma)undefined,$(ASAN_TESTS))

# Every fuzz target under libFuzzer with ASan and UBSan, FUZZ_SECONDS each (CI: 60), from the
# committed corpora (tests/fuzz/corpus). Needs clang; the bootstrap installs it.
FUZZ_SECONDS ?= 60
fuzz: bootstrap
	@CC=clang CXX=clang++ cmake -S . -B $(BUILD)-fuzz -G $(GENERATOR) \
	  -DCELLROUTE_BUILD_FUZZERS=ON -DCELLROUTE_BUILD_TOOLS=OFF \
	  -DCELLROUTE_SANITIZE=address$(comma)undefined -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  $(CMAKE_ARGS) >/dev/null
	@cmake --build $(BUILD)-fuzz -j$(JOBS) --target fuzzers
	@scripts/fuzz $(BUILD)-fuzz $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD) $(BUILD)-tsan $(BUILD)-asan $(BUILD)-fuzz
