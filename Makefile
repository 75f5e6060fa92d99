# sluice — plain Makefile. `make` installs missing build dependencies
# (scripts/install-deps.sh), then builds ./sluice.
#   make            build ./sluice and ./sluicectl
#   make run        demo: a private Postfix on loopback behind sluice on :2525
#   make test       everything: unit, scenario (real Postfix + DNS), sanitizers, fuzz smoke
#   make san        ASan+UBSan build in build-san/
#   make fuzz       libFuzzer targets in build-fuzz/
#   make man        regenerate man/sluice.conf.5 and contrib/sluice.conf
#                   from the settings table (scripts/check-docs.sh checks)
#   make install    what `make` builds, the man pages and the sample
#                   configuration under $(DESTDIR)$(PREFIX)
#   make deb        the Debian package in build/deb/ (scripts/build-deb.sh)
#   NO_DEPS=1       skip scripts/install-deps.sh (package builds)

CC      ?= cc
PKGS     = libevent libevent_openssl libevent_pthreads openssl
PYTHON  ?= /usr/bin/python3
BUILD   ?= build
WARN     = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CFLAGS  ?= -O2 -g
# The version (sluice -V, src/version.h): debian/changelog's first entry
# (make VERSION=x overrides it; the environment does not).
VERSION := $(shell sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' debian/changelog 2>/dev/null)
VERSION_CFLAGS = $(if $(VERSION),-DSLUICE_VERSION='"$(VERSION)"')
ALL_CFLAGS = -std=c17 -D_GNU_SOURCE $(WARN) $(CPPFLAGS) $(CFLAGS) $(EXTRA_CFLAGS) $(PKG_CFLAGS) $(VERSION_CFLAGS)
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LDLIBS   = $(PKG_LIBS) -llmdb -lhiredis -lpthread -lm

SRC      = $(sort $(wildcard src/*.c))
LIB_SRC  = $(filter-out src/main.c src/sluicectl.c,$(SRC))
LIB_OBJ  = $(LIB_SRC:src/%.c=$(BUILD)/%.o)
UNIT_SRC = $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN = $(UNIT_SRC:tests/unit/%.c=$(BUILD)/%)
FUZZ_SRC = $(sort $(wildcard fuzz/fuzz_*.c))

PREFIX  ?= /usr
SBINDIR ?= $(PREFIX)/sbin
MANDIR  ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc

.PHONY: all deps run test unit scenario san fuzz fuzz-smoke lint clean man install deb bench-tools
all: deps
	@$(MAKE) --no-print-directory sluice sluicectl

deps:
	@[ -n "$(NO_DEPS)" ] || ./scripts/install-deps.sh

sluice: $(BUILD)/main.o $(BUILD)/libsluice.a
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

sluicectl: $(BUILD)/sluicectl.o $(BUILD)/libsluice.a
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/libsluice.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/%.o: src/%.c src/*.h | $(BUILD)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/test_%: tests/unit/test_%.c $(BUILD)/libsluice.a tests/unit/*.h
	$(CC) $(ALL_CFLAGS) -Isrc -o $@ $< $(BUILD)/libsluice.a $(LDLIBS) -lcmocka

$(BUILD):
	mkdir -p $@

# Documentation generated from the settings table (tools/gendoc.c).
$(BUILD)/gendoc: tools/gendoc.c $(BUILD)/libsluice.a src/config.h
	$(CC) $(ALL_CFLAGS) -Isrc -o $@ $< $(BUILD)/libsluice.a $(LDLIBS)

man: $(BUILD)/gendoc
	$(BUILD)/gendoc man > man/sluice.conf.5
	$(BUILD)/gendoc conf user=sluice > contrib/sluice.conf

# Installs every program `make` builds: a program is one with a rule here
# (sluice, and sluicectl once it has one); a rule whose program was not
# built is an error. The configuration goes to $(SYSCONFDIR)/sluice only
# if none is there (the Debian package ships it as a conffile).
install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(SYSCONFDIR)/sluice
	@set -e; for p in sluice sluicectl; do \
		if $(MAKE) -n --no-print-directory $$p >/dev/null 2>&1; then \
			echo "install -m 0755 $$p $(DESTDIR)$(SBINDIR)/$$p"; \
			install -m 0755 $$p $(DESTDIR)$(SBINDIR)/$$p; fi; done
	@set -e; for m in man/*.[0-9]; do s=$${m##*.}; \
		echo "install -m 0644 $$m $(DESTDIR)$(MANDIR)/man$$s/"; \
		install -d $(DESTDIR)$(MANDIR)/man$$s; \
		install -m 0644 $$m $(DESTDIR)$(MANDIR)/man$$s/; done
	[ -e $(DESTDIR)$(SYSCONFDIR)/sluice/sluice.conf ] || \
		install -m 0644 contrib/sluice.conf $(DESTDIR)$(SYSCONFDIR)/sluice/sluice.conf

# dpkg-buildpackage in a copy of the tree; lintian; build/deb/*.deb.
deb:
	./scripts/build-deb.sh

unit: deps
	@$(MAKE) --no-print-directory $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

scenario: deps
	@$(MAKE) --no-print-directory sluice sluicectl
	SLUICE_BIN=$(CURDIR)/sluice $(PYTHON) -m pytest -q -p no:cacheprovider tests/scenario $(PYTEST_ARGS)

san: deps
	@$(MAKE) --no-print-directory BUILD=build-san CC=clang \
		EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
		LDFLAGS="-fsanitize=address,undefined" build-san/sluice build-san/sluicectl build-san/unit-bins

build-san/sluice: $(BUILD)/main.o $(BUILD)/libsluice.a
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)
build-san/sluicectl: $(BUILD)/sluicectl.o $(BUILD)/libsluice.a
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
	rm -rf build build-san build-fuzz sluice sluicectl

# Benchmark tools (bench/): the C load generator.
bench-tools: $(BUILD)/loadgen $(BUILD)/evsizes $(BUILD)/syscost
$(BUILD)/evsizes: bench/evsizes.c | $(BUILD)
	$(CC) -std=c17 -D_GNU_SOURCE -O2 $(PKG_CFLAGS) -o $@ $< $(PKG_LIBS)
$(BUILD)/syscost: bench/syscost.c | $(BUILD)
	$(CC) -std=c17 -D_GNU_SOURCE -O2 $(WARN) -o $@ $<
$(BUILD)/loadgen: bench/loadgen.c | $(BUILD)
	$(CC) -std=c17 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(PKG_CFLAGS) -o $@ $< $(PKG_LIBS) -lm
