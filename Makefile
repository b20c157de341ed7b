# Thin wrapper around CMake. CMakeLists.txt is the real build.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
LUA        ?= lua5.4
BUSTED     := $(LUA) /usr/bin/busted

DEB_PACKAGES := build-essential cmake pkg-config liblua5.4-dev lua5.4 libev-dev \
  libssl-dev openssl lua-busted lua-socket lua-check swaks python3 curl libc-ares-dev

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

# libFuzzer harnesses for the pure modules (tests/fuzz/README.md).
# Needs clang with the fuzzer runtime; each runs FUZZ_SECONDS seconds.
.PHONY: fuzz
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_DIR     ?= build-fuzz
FUZZ_FLAGS   := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Icore

fuzz:
	mkdir -p $(FUZZ_DIR)/corpus/parser $(FUZZ_DIR)/corpus/addr $(FUZZ_DIR)/corpus/scan
	$(FUZZ_CC) $(FUZZ_FLAGS) tests/fuzz/fuzz_parser.c core/smtp_parser.c core/smtp_addr.c core/util.c -o $(FUZZ_DIR)/fuzz_parser
	$(FUZZ_CC) $(FUZZ_FLAGS) tests/fuzz/fuzz_addr.c core/smtp_addr.c core/util.c -o $(FUZZ_DIR)/fuzz_addr
	$(FUZZ_CC) $(FUZZ_FLAGS) tests/fuzz/fuzz_scan.c core/msg_scan.c core/util.c -o $(FUZZ_DIR)/fuzz_scan
	for f in parser addr scan; do \
	  $(FUZZ_DIR)/fuzz_$$f -dict=tests/fuzz/smtp.dict -max_total_time=$(FUZZ_SECONDS) \
	    -artifact_prefix=$(FUZZ_DIR)/ -print_final_stats=1 $(FUZZ_DIR)/corpus/$$f tests/fuzz/seeds/$$f \
	    || exit 1; \
	done
