# engram-ps top-level entry points. Each target installs missing Debian packages first
# (scripts/install_deps.sh, a no-op when all are present), configures and builds, then runs.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=

.PHONY: all deps build test test-release test-asan demo bench clean

all: build

deps:
	@bash scripts/install_deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

# The tests run twice: an optimised build, then AddressSanitizer + UndefinedBehaviorSanitizer.
test: test-release test-asan

test-release: build
	ctest --test-dir $(BUILD) -j$(JOBS) --output-on-failure --timeout 600

test-asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DENGRAM_SANITIZE=ON -DENGRAM_BUILD_BENCH=OFF $(CMAKE_ARGS) >/dev/null
	@cmake --build $(ASAN_BUILD) -j$(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(ASAN_BUILD) -j$(JOBS) --output-on-failure --timeout 900

demo: build
	@bash scripts/demo.sh $(BUILD) 16 $(DEMO_ARGS)

bench: build
	@bash bench/run.sh $(BUILD) $(BENCH_ARGS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) bench-results
