# sluice — plain Makefile. `make` installs missing build dependencies
# (scripts/install-deps.sh), then builds ./sluice.
#   make            build ./sluice
#   make run        demo: a private Postfix on loopback behind sluice on :2525
#   make test       everything: unit, scenario (real Postfix + DNS), sanitizers, fuzz smoke
#   make san        ASan+UBSan build in build-san/
#   make fuzz       libFuzzer targets in build-fuzz/

CC      ?= cc
PKGS     = libevent libevent_openssl libevent_pthreads openssl
PYTHON  ?= /usr/bin/python3
BUILD   ?= build
WARN     = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CFLAGS  ?= -O2 -g
ALL_CFLAGS = -std=c17 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(EXTRA_CFLAGS) $(PKG_CFLAGS)
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LDLIBS   = $(PKG_LIBS) -llmdb -lhiredis -lpthread -lm

SRC      = $(sort $(wildcard src/*.c))
LIB_SRC  = $(filter-out src/main.c,$(SRC))
LIB_OBJ  = $(LIB_SRC:src/%.c=$(BUILD)/%.o)
UNIT_SRC = $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN = $(UNIT_SRC:tests/unit/%.c=$(BUILD)/%)
FUZZ_SRC = $(sort $(wildcard fuzz/fuzz_*.c))

.PHONY: all deps run test unit scenario san fuzz fuzz-smoke lint clean bench-tools
all: deps
	@$(MAKE) --no-print-directory sluice

deps:
	@./scripts/install-deps.sh

sluice: $(BUILD)/main.o $(BUILD)/libsluice.a
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/libsluice.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/%.o: src/%.c src/*.h | $(BUILD)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/test_%: tests/unit/test_%.c $(BUILD)/libsluice.a tests/unit/*.h
	$(CC) $(ALL_CFLAGS) -Isrc -o $@ $< $(BUILD)/libsluice.a $(LDLIBS) -lcmocka

$(BUILD):
	mkdir -p $@

unit: deps
	@$(MAKE) --no-print-directory $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

scenario: deps
	@$(MAKE) --no-print-directory sluice
	SLUICE_BIN=$(CURDIR)/sluice $(PYTHON) -m pytest -q -p no:cacheprovider tests/scenario $(PYTEST_ARGS)

san: deps
	@$(MAKE) --no-print-directory BUILD=build-san CC=clang \
		EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
		LDFLAGS="-fsanitize=address,undefined" build-san/sluice build-san/unit-bins

build-san/sluice: $(BUILD)/main.o $(BUILD)/libsluice.a
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)
build-san/unit-bins: $(UNIT_BIN)
	@touch $@

fuzz: deps
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=clang \
		EXTRA_CFLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -DSLUICE_FUZZING" \
		build-fuzz/libsluice.a
	@set -e; for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
		clang -std=c17 -D_GNU_SOURCE -g -O1 -Isrc $(PKG_CFLAGS) -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		-o build-fuzz/$$n $$f build-fuzz/libsluice.a $(LDLIBS); done

fuzz-smoke: fuzz
	./scripts/fuzz-smoke.sh $(FUZZ_SECONDS)

lint:
	./scripts/lint-blocking.sh

test: deps
	./scripts/test-all.sh

run: deps
	@$(MAKE) --no-print-directory sluice
	./scripts/run-demo.sh

clean:
	rm -rf build build-san build-fuzz sluice

# Benchmark tools (bench/): the C load generator.
bench-tools: $(BUILD)/loadgen $(BUILD)/evsizes
$(BUILD)/evsizes: bench/evsizes.c | $(BUILD)
	$(CC) -std=c17 -D_GNU_SOURCE -O2 $(PKG_CFLAGS) -o $@ $< $(PKG_LIBS)
$(BUILD)/loadgen: bench/loadgen.c | $(BUILD)
	$(CC) -std=c17 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(PKG_CFLAGS) -o $@ $< $(PKG_LIBS) -lm
