# lua-prefect. `make test` and `make demo` do all the set-up on a fresh Debian 12 machine.
# LUA=lua5.4 (default) or LUA=luajit picks the flavour that `build`, `spec` and `demo` use.

LUA      ?= lua5.4
VERSION  := scm-1
BUILD    := build/$(LUA)
MODULE   := $(BUILD)/prefect/core.so
SOURCES  := $(wildcard csrc/*.c)
HEADERS  := $(wildcard csrc/*.h)

ifeq ($(LUA),luajit)
LUA_PC   := luajit
else
LUA_PC   := $(LUA)
endif

CC       ?= cc
OPT      ?= -O2
CFLAGS   ?= $(OPT) -g
WARN     := -std=c99 -Wall -Wextra -Werror -Werror=implicit-function-declaration -pedantic
DEFS     := -D_POSIX_C_SOURCE=200809L -DPREFECT_VERSION='"$(VERSION)"'
LUA_INC   = $(shell pkg-config --cflags $(LUA_PC))
CURL_INC  = $(shell pkg-config --cflags libcurl)
CURL_LIB  = $(shell pkg-config --libs libcurl)

export LUA_PATH  := $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/spec/support/?.lua;;
export LUA_CPATH := $(CURDIR)/$(BUILD)/?.so;;

.PHONY: all build build-all deps test spec lint demo clean rock rock-core dist doc ctest valgrind fuzz bench examples asan test-real record-real

all: build

deps:
	@tools/deps.sh

build: $(MODULE)

$(MODULE): $(SOURCES) $(HEADERS) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) $(DEFS) -fPIC -shared $(LUA_INC) $(CURL_INC) \
		-o $@ $(SOURCES) $(CURL_LIB) -lpthread

build-all:
	@$(MAKE) --no-print-directory build LUA=lua5.4
	@$(MAKE) --no-print-directory build LUA=luajit

lint:
	luacheck -q --no-color lua spec tests/real examples bench tools/*.lua bin/prefect-test-server
	clang-format --dry-run -Werror csrc/*.c csrc/*.h tests/c/*.c bench/*.c fuzz/*.c examples/host/*.c

# The busted specs under one flavour (LUA=...), without the set-up.
spec: build
	@tools/test.sh $(LUA)

# Everything, on a fresh machine: packages, both builds, lint, the rock, the
# specs under Lua 5.4 and LuaJIT, the C tests, valgrind, every spec against an
# ASan + UBSan build, a short fuzz run, and the real Prefect server's stage
# (PREFECT_REAL=skip skips only that one, and says so in the tally).
test: deps build-all lint
	@tools/rock.sh lua5.4
	@tools/rock.sh luajit
	@tools/test.sh lua5.4 luajit ctest valgrind asan fuzz real

# The real Prefect server (pinned in tools/real/requirements.txt, installed from
# PyPI into build/prefect-venv) on SQLite and on PostgreSQL: the differential
# suite against our client and the bundled test server, auth and CSRF.
test-real: deps build
	@tools/test.sh real

# Re-records spec/fixtures/{dataset,exchanges}-<version>.json from the real server.
record-real: deps build
	@tools/real/record.sh

ctest: deps
	@tools/test.sh ctest

# Every spec under Lua 5.4 against a build of prefect.core with ASan + UBSan.
asan: deps
	@tools/test.sh asan

# The decoder, transport and read_ahead specs under valgrind memcheck (LUA=... picks the flavour).
valgrind: deps build
	@LUA=$(LUA) tools/valgrind.sh spec/decode_spec.lua spec/transport_spec.lua spec/read_ahead_spec.lua

# FUZZ_SECONDS=600 make fuzz
fuzz: deps
	@tools/fuzz.sh $${FUZZ_SECONDS:-600}

# The C host that embeds Lua 5.4 and polls a slow server at 60 frames a second.
examples: deps build
	@tools/examples.sh

# Benchmarks against peers, printing ratios (not part of make test): about 3 minutes;
# BENCH=--full reads 1,000,000 runs end to end (about 10 minutes).
bench: deps build-all
	@tools/bench.sh $(BENCH)

demo: deps build
	@LUA=$(LUA) tools/demo.sh

# Installs the rock into a private tree, as a user's `luarocks make` would.
rock: deps
	tools/rock.sh $(LUA)

# The release's source rock, build/dist/lua-prefect-V-R.src.rock, which `luarocks install`
# builds with no network (see tools/dist.sh).
dist: deps
	@tools/dist.sh

# The API reference from the doc comments (LDoc, config.ld): build/doc/index.html.
doc: deps
	@tools/doc.sh

# What the rockspecs' `make` build runs: prefect.core in one compiler call, so no
# object file lands in csrc/; luarocks passes CFLAGS, LIBFLAG and the directories.
# Without -Werror: a newer compiler's new warning must not stop an install.
ROCK_CORE := build/rock/prefect/core.so
rock-core:
	@mkdir -p $(dir $(ROCK_CORE))
	$(CC) $(CFLAGS) $(LIBFLAG) -std=c99 -D_POSIX_C_SOURCE=200809L -DPREFECT_VERSION='"$(VERSION)"' \
		-I$(LUA_INCDIR) -I$(CURL_INCDIR) -o $(ROCK_CORE) $(SOURCES) -L$(CURL_LIBDIR) -lcurl -lpthread

clean:
	rm -rf build
