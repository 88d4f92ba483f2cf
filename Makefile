# The two commands a fresh Debian machine needs (as root, so the bootstrap can apt-get):
#   make demo   route the example requests with the embedded defaults
#   make test   build everything and run every test
BUILD      ?= build
GENERATOR  ?= Ninja
JOBS       ?= 2
CMAKE_ARGS ?=
CELLROUTE   = $(BUILD)/tools/cellroute

.PHONY: all bootstrap configure build demo test clean

all: build

bootstrap:
	@scripts/bootstrap

configure: bootstrap
	@cmake -S . -B $(BUILD) -G $(GENERATOR) -DCELLROUTE_DEVELOPER=ON \
	  -DPYTHON_EXECUTABLE=/usr/bin/python3 $(CMAKE_ARGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j$(JOBS)

demo: build
	@$(CELLROUTE) route --table examples/requests.jsonl

test: build
	@ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)

clean:
	rm -rf $(BUILD)
