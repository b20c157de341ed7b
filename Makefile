# Thin wrapper around CMake. CMakeLists.txt is the real build.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
LUA        ?= lua5.4
BUSTED     := $(LUA) /usr/bin/busted

DEB_PACKAGES := build-essential cmake pkg-config liblua5.4-dev lua5.4 libev-dev \
  libssl-dev openssl lua-busted lua-socket lua-check swaks python3 curl

.PHONY: all deps build build-asan run test test-unit test-lua test-e2e test-asan lint bench install clean

all: build

deps:
	@sh tools/deps.sh $(DEB_PACKAGES)

$(BUILD)/Makefile:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

$(ASAN_BUILD)/Makefile:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DKURIR_SANITIZE=ON

build: $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

build-asan: $(ASAN_BUILD)/Makefile
	cmake --build $(ASAN_BUILD) -j $(JOBS)

run: deps build
	./$(BUILD)/kurir

test: deps build build-asan
	$(MAKE) --no-print-directory test-unit test-lua test-e2e lint
	$(MAKE) --no-print-directory test-asan

test-unit:
	cd $(BUILD) && ctest --output-on-failure

test-lua:
	$(BUSTED) --run=lua

test-e2e:
	KURIR_BIN=$(CURDIR)/$(BUILD)/kurir $(BUSTED) --run=e2e

test-asan:
	cd $(ASAN_BUILD) && ctest --output-on-failure
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  KURIR_BIN=$(CURDIR)/$(ASAN_BUILD)/kurir KURIR_SANITIZED=1 $(BUSTED) --run=e2e

lint:
	luacheck lua scripts spec

bench: build
	sh bench/run.sh

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
