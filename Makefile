# Thin wrapper around CMake. CMakeLists.txt is the real build.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
LUA        ?= lua5.4
PYTHON     ?= /usr/bin/python3
BUSTED     := $(LUA) /usr/bin/busted

# Everything the build, the tests, the fuzzers and the tools drive. swaks's
# TLS and SASL modules are only recommendations of the swaks package, and
# deps installs without recommendations, so they are named here; clang's
# libFuzzer runtime is libclang-rt-14-dev (also only recommended).
DEB_PACKAGES := build-essential cmake pkg-config liblua5.4-dev lua5.4 libev-dev \
  libssl-dev openssl lua-busted lua-socket lua-check swaks python3 curl libc-ares-dev \
  libnet-ssleay-perl libauthen-sasl-perl libdigest-hmac-perl strace \
  clang libclang-rt-14-dev \
  libmicrohttpd-dev libgmime-3.0-dev lua-cjson python3-pytest python3-aiosmtpd \
  chromium chromium-driver python3-selenium nodejs node-nodemailer

# Debian's Node.js modules (node-nodemailer) live here; a nodejs from
# elsewhere does not look there by itself, so the JS example gets NODE_PATH
DEB_NODE_PATH := /usr/share/nodejs

# for make bench only (bench/run.sh installs postfix itself, with its
# daemon kept from starting; smtp-server and Haraka come from npm, which
# needs Node.js >= 20 and npm)
BENCH_DEB_PACKAGES := linux-perf
# npm: Debian's package, unless a nodejs that bundles its own npm is installed
BENCH_DEB_PACKAGES += $(shell command -v npm >/dev/null 2>&1 || echo npm)

.PHONY: all deps build build-asan run test test-unit test-lua test-e2e test-asan test-fuzz check-tools lint bench bench-queue \
  install clean test-browser test-examples

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
	@echo "kurir mock: SMTP on 127.0.0.1:1025, web UI and API on http://127.0.0.1:8025/"
	./$(BUILD)/kurir

test: deps build build-asan
	$(MAKE) --no-print-directory check-tools
	$(MAKE) --no-print-directory test-unit test-lua test-e2e test-browser test-examples lint
	$(MAKE) --no-print-directory test-asan
	$(MAKE) --no-print-directory test-fuzz

# Every outside tool the specs drive, checked once before the e2e run: a
# missing one is one clear line naming its package (tools/check-test-tools.sh).
check-tools:
	@sh tools/check-test-tools.sh $(LUA)

test-unit:
	cd $(BUILD) && ctest --output-on-failure

test-lua:
	$(BUSTED) --run=lua

test-e2e: check-tools
	KURIR_BIN=$(CURDIR)/$(BUILD)/kurir $(BUSTED) --run=e2e

# the web UI in headless Chromium, driven by selenium through chromedriver
# (screenshots under $(BUILD)/screenshots)
test-browser: check-tools
	KURIR_BIN=$(CURDIR)/$(BUILD)/kurir SCREENSHOT_DIR=$(CURDIR)/$(BUILD)/screenshots $(PYTHON) tests/browser/ui_test.py

# the README's test examples: pytest and JavaScript (node:test + nodemailer + fetch)
test-examples: check-tools
	KURIR_BIN=$(CURDIR)/$(BUILD)/kurir $(PYTHON) -m pytest -q -p no:cacheprovider examples/python
	KURIR_BIN=$(CURDIR)/$(BUILD)/kurir NODE_PATH=$(DEB_NODE_PATH) node --test examples/js/signup.test.mjs

test-asan: check-tools
	cd $(ASAN_BUILD) && ctest --output-on-failure
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  KURIR_BIN=$(CURDIR)/$(ASAN_BUILD)/kurir KURIR_SANITIZED=1 $(BUSTED) --run=e2e

lint:
	sh tools/check-layers.sh
	sh tools/check-layers-test.sh
	luacheck lua scripts spec tests/runtime

bench: build
	@sh tools/deps.sh $(BENCH_DEB_PACKAGES)
	sh bench/run.sh

# the queue end to end, kurir next to a private Postfix instance (root)
bench-queue: build
	@sh tools/deps.sh $(BENCH_DEB_PACKAGES)
	bash bench/queue.sh

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

# libFuzzer harnesses for the pure modules (tests/fuzz/README.md).
# Needs clang with the fuzzer runtime (make deps installs both); each runs
# FUZZ_SECONDS seconds. `make test` runs them for TEST_FUZZ_SECONDS each
# (test-fuzz), so that a parser regression fails CI, not only a manual run.
.PHONY: fuzz
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
TEST_FUZZ_SECONDS ?= 10
FUZZ_DIR     ?= build-fuzz
FUZZ_FLAGS   := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Icore

test-fuzz:
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || { echo "test-fuzz: $(FUZZ_CC) is missing: install clang and libclang-rt-14-dev (make deps)" >&2; exit 1; }
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(TEST_FUZZ_SECONDS)

fuzz:
	mkdir -p $(FUZZ_DIR)/corpus/parser $(FUZZ_DIR)/corpus/addr $(FUZZ_DIR)/corpus/scan
	$(FUZZ_CC) $(FUZZ_FLAGS) tests/fuzz/fuzz_parser.c core/proto/smtp_parser.c core/proto/smtp_addr.c core/proto/util.c -o $(FUZZ_DIR)/fuzz_parser
	$(FUZZ_CC) $(FUZZ_FLAGS) tests/fuzz/fuzz_addr.c core/proto/smtp_addr.c core/proto/util.c -o $(FUZZ_DIR)/fuzz_addr
	$(FUZZ_CC) $(FUZZ_FLAGS) tests/fuzz/fuzz_scan.c core/proto/msg_scan.c core/proto/util.c -o $(FUZZ_DIR)/fuzz_scan
	for f in parser addr scan; do \
	  $(FUZZ_DIR)/fuzz_$$f -dict=tests/fuzz/smtp.dict -max_total_time=$(FUZZ_SECONDS) \
	    -artifact_prefix=$(FUZZ_DIR)/ -print_final_stats=1 $(FUZZ_DIR)/corpus/$$f tests/fuzz/seeds/$$f \
	    || exit 1; \
	done
