# asyncd — build, test, run, bench.
#
#   make            build everything into build/
#   make test       build and run every GoogleTest binary, then the ASan+UBSan flavour
#   make asan       the ASan+UBSan flavour alone
#   make run        start asyncd on etc/asyncd.conf with the echo plugin
#   make bench      run the benchmarks and print their figures
#   make fuzz       build the libFuzzer targets (needs clang++) and run them a while
#   make format     clang-format every source file; make format-check only checks
#   make install    build, then install under PREFIX (default /usr/local; DESTDIR for
#                   packagers); make uninstall removes what it installed
#
# Warnings are errors when CI is set in the environment (CI=true make test).

# The C++ compiler the machine has: g++, or clang++ where there is no g++ (CXX=... picks).
ifeq ($(origin CXX),default)
CXX := $(shell command -v g++ >/dev/null 2>&1 && echo g++ || echo clang++)
endif
BUILD := build

WARN := -Wall -Wextra -Wshadow -Wpointer-arith -Wcast-qual -Wformat=2
ifdef CI
WARN += -Werror
endif
BASEFLAGS := -std=c++17 -g $(WARN) -MMD -MP -I. -pthread
RELFLAGS := $(BASEFLAGS) -O2
SANFLAGS := $(BASEFLAGS) -O1 -fno-omit-frame-pointer \
	-fsanitize=address,undefined -fno-sanitize-recover=all
LDLIBS := -pthread

GTEST_LIBS := -lgtest -lgtest_main
GTEST_HEADER := $(firstword $(wildcard /usr/include/gtest/gtest.h /usr/local/include/gtest/gtest.h))

SHMQ_SRCS := $(wildcard shmq/*.cc)
CORE_SRCS := $(filter-out main/main.cc,$(wildcard core/*.cc main/*.cc conn/*.cc work/*.cc cluster/*.cc))
TEST_SRCS := $(wildcard test/*/*.cc) $(wildcard test/*.cc)

# Plugins: C shared objects. The runtime functions they call are resolved against the
# asyncd executable, which exports them (-rdynamic).
PLUGIN_CFLAGS := -std=c99 -O2 -g -fPIC -shared -Wall -Wextra -I.
ifdef CI
PLUGIN_CFLAGS += -Werror
endif
EXAMPLE_PLUGINS := $(patsubst plugin_api/examples/%.c,$(BUILD)/plugins/%.so,$(wildcard plugin_api/examples/*.c))
TEST_PLUGINS := $(patsubst test/plugins/%.c,$(BUILD)/test-plugins/%.so,$(wildcard test/plugins/*.c))

# One object tree per flavour: build/rel/... and build/san/...
rel_objs = $(patsubst %.cc,$(BUILD)/rel/%.o,$(1))
san_objs = $(patsubst %.cc,$(BUILD)/san/%.o,$(1))

ASYNCD := $(BUILD)/asyncd
ASYNCD_SAN := $(BUILD)/san/asyncd
# The same with the test hooks compiled in (a corrupt-record trigger in conn); only tests
# start these.
ASYNCD_HOOKS := $(BUILD)/asyncd-hooks
ASYNCD_HOOKS_SAN := $(BUILD)/san/asyncd-hooks
HOOK_SRCS := conn/clients.cc
TEST_BIN := $(BUILD)/asyncd-test
TEST_BIN_SAN := $(BUILD)/asyncd-test-san
SHMQ_BENCH := $(BUILD)/shmq-bench
BENCH_TOOL := $(BUILD)/asyncd-bench
REF_ECHO := $(BUILD)/ref_echo
MIN_CLIENT := $(BUILD)/min_client
NODE_BENCH_SO := $(BUILD)/bench-plugins/node_bench.so
BENCH_LIB_SRCS := bench/histogram.cc bench/protocol.cc bench/loadgen.cc bench/report.cc bench/server_cpu.cc

# The ZooKeeper discovery module (cluster/zk/), loaded by conn with dlopen when asyncd.conf
# says `discovery zookeeper`. Built only where the ZooKeeper C client is installed
# (libzookeeper-mt-dev); elsewhere make says so in one line and builds everything else.
ZK_MODULE := $(BUILD)/asyncd_zk.so
ZK_TOOL := $(BUILD)/zk-tool
ZK_HEADER := /usr/include/zookeeper/zookeeper.h
ZK_FLAGS := -std=c++17 -O2 -g $(WARN) -fPIC -shared -DTHREADED -I. -pthread

# The frame decoder's libFuzzer target (R7): conn/frame.cc alone, under ASan+UBSan. g++ has
# no libFuzzer, so it is built only where clang++ is installed. `make fuzz` runs it for
# FUZZ_SECONDS, `make reliability` for RELIABILITY_FUZZ_SECONDS.
CLANGXX := $(shell command -v clang++ 2>/dev/null)
FRAME_FUZZER := $(BUILD)/fuzz/frame-fuzzer
# The cluster's frame reader (C10): cluster/frames.cc and cluster/wire.cc alone, likewise.
WIRE_FUZZER := $(BUILD)/fuzz/wire-fuzzer
FUZZ_FLAGS := -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	$(WARN) -I.
FUZZ_SECONDS ?= 20
RELIABILITY_FUZZ_SECONDS ?= 60
FUZZ_SKIPPED := R7 and C10 libFuzzer: clang++ not found; skipped (apt-get install clang to run it)

.PHONY: all zk-module test test-tools asan run run-cluster run-resp-cluster bench reliability fuzz clean format format-check check-gtest FORCE

all: $(ASYNCD) $(EXAMPLE_PLUGINS) $(SHMQ_BENCH) $(BENCH_TOOL) $(REF_ECHO) $(MIN_CLIENT) zk-module

# The header is looked for when the rule runs, not when make starts: `make test` installs the
# package first (test-tools), then builds the module.
zk-module:
	@if [ -f $(ZK_HEADER) ]; then $(MAKE) --no-print-directory $(ZK_MODULE) $(ZK_TOOL); \
	else echo "asyncd_zk.so (ZooKeeper discovery) skipped: $(ZK_HEADER) not found (apt-get install libzookeeper-mt-dev)"; fi

$(ZK_MODULE): cluster/zk/zk_discovery.cc cluster/discovery_abi.h $(BUILD)/rel/.flags
	@mkdir -p $(dir $@)
	$(CXX) $(ZK_FLAGS) cluster/zk/zk_discovery.cc -o $@ -lzookeeper_mt

# The discovery tests' stand-in for other ZooKeeper writers.
$(ZK_TOOL): cluster/zk/zk_tool.cc $(BUILD)/rel/.flags
	@mkdir -p $(dir $@)
	$(CXX) $(filter-out -fPIC -shared,$(ZK_FLAGS)) cluster/zk/zk_tool.cc -o $@ -lzookeeper_mt

# Each flavour's flags are kept in a file that changes only when they do, so that turning
# CI on (or changing a flag) rebuilds what was built without it.
$(BUILD)/rel/.flags: FORCE
	@mkdir -p $(dir $@)
	@echo '$(RELFLAGS)' | cmp -s - $@ || echo '$(RELFLAGS)' > $@

$(BUILD)/san/.flags: FORCE
	@mkdir -p $(dir $@)
	@echo '$(SANFLAGS)' | cmp -s - $@ || echo '$(SANFLAGS)' > $@

$(BUILD)/rel/%.o: %.cc $(BUILD)/rel/.flags
	@mkdir -p $(dir $@)
	$(CXX) $(RELFLAGS) -c $< -o $@

$(BUILD)/san/%.o: %.cc $(BUILD)/san/.flags
	@mkdir -p $(dir $@)
	$(CXX) $(SANFLAGS) -c $< -o $@

$(BUILD)/rel/libshmq.a: $(call rel_objs,$(SHMQ_SRCS))
	$(AR) rcs $@ $^

$(BUILD)/san/libshmq.a: $(call san_objs,$(SHMQ_SRCS))
	$(AR) rcs $@ $^

$(ASYNCD): $(call rel_objs,main/main.cc $(CORE_SRCS)) $(BUILD)/rel/libshmq.a
	$(CXX) $(RELFLAGS) -rdynamic $^ -o $@ -ldl $(LDLIBS)

$(ASYNCD_SAN): $(call san_objs,main/main.cc $(CORE_SRCS)) $(BUILD)/san/libshmq.a
	$(CXX) $(SANFLAGS) -rdynamic $^ -o $@ -ldl $(LDLIBS)

$(BUILD)/rel-hooks/%.o: %.cc $(BUILD)/rel/.flags
	@mkdir -p $(dir $@)
	$(CXX) $(RELFLAGS) -DASYNCD_TEST_HOOKS -c $< -o $@

$(BUILD)/san-hooks/%.o: %.cc $(BUILD)/san/.flags
	@mkdir -p $(dir $@)
	$(CXX) $(SANFLAGS) -DASYNCD_TEST_HOOKS -c $< -o $@

$(ASYNCD_HOOKS): $(call rel_objs,main/main.cc $(filter-out $(HOOK_SRCS),$(CORE_SRCS))) $(patsubst %.cc,$(BUILD)/rel-hooks/%.o,$(HOOK_SRCS)) $(BUILD)/rel/libshmq.a
	$(CXX) $(RELFLAGS) -rdynamic $^ -o $@ -ldl $(LDLIBS)

$(ASYNCD_HOOKS_SAN): $(call san_objs,main/main.cc $(filter-out $(HOOK_SRCS),$(CORE_SRCS))) $(patsubst %.cc,$(BUILD)/san-hooks/%.o,$(HOOK_SRCS)) $(BUILD)/san/libshmq.a
	$(CXX) $(SANFLAGS) -rdynamic $^ -o $@ -ldl $(LDLIBS)

$(BUILD)/plugins/%.so: plugin_api/examples/%.c plugin_api/asyncd_plugin.h $(wildcard plugin_api/examples/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) $< -o $@

$(NODE_BENCH_SO): bench/node_bench.c plugin_api/asyncd_plugin.h
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) $< -o $@

$(BUILD)/test-plugins/%.so: test/plugins/%.c plugin_api/asyncd_plugin.h test/plugins/plugin_util.h
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) $< -o $@

$(BENCH_TOOL): $(call rel_objs,bench/asyncd_bench.cc $(BENCH_LIB_SRCS))
	$(CXX) $(RELFLAGS) $^ -o $@ $(LDLIBS)

$(REF_ECHO): bench/ref_echo.c
	@mkdir -p $(dir $@)
	$(CC) -std=c99 -O2 -g -Wall -Wextra $(if $(CI),-Werror) $< -o $@

$(MIN_CLIENT): bench/min_client.c
	@mkdir -p $(dir $@)
	$(CC) -std=c99 -O2 -g -Wall -Wextra $(if $(CI),-Werror) $< -o $@

$(SHMQ_BENCH): $(BUILD)/rel/bench/shmq_bench.o $(BUILD)/rel/libshmq.a
	$(CXX) $(RELFLAGS) $^ -o $@ $(LDLIBS)

check-gtest:
	@if [ -z "$(GTEST_HEADER)" ]; then \
	  echo "GoogleTest headers not found. Install them with:"; \
	  echo "    sudo apt-get install -y libgtest-dev"; \
	  exit 1; \
	fi

$(TEST_BIN): $(call rel_objs,$(TEST_SRCS) $(CORE_SRCS) $(BENCH_LIB_SRCS)) $(BUILD)/rel/libshmq.a | check-gtest
	$(CXX) $(RELFLAGS) -rdynamic $^ -o $@ $(GTEST_LIBS) -ldl $(LDLIBS)

$(TEST_BIN_SAN): $(call san_objs,$(TEST_SRCS) $(CORE_SRCS) $(BENCH_LIB_SRCS)) $(BUILD)/san/libshmq.a | check-gtest
	$(CXX) $(SANFLAGS) -rdynamic $^ -o $@ $(GTEST_LIBS) -ldl $(LDLIBS)

# The test objects need the GoogleTest headers; say so before the compiler does.
$(call rel_objs,$(TEST_SRCS)) $(call san_objs,$(TEST_SRCS)): | check-gtest

# The black-box tests start the asyncd binary named by ASYNCD_BIN with plugins from
# ASYNCD_PLUGIN_DIR; the sanitizer run starts the sanitizer build of asyncd.
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
TEST_DEPS := $(ASYNCD) $(ASYNCD_SAN) $(ASYNCD_HOOKS) $(ASYNCD_HOOKS_SAN) $(EXAMPLE_PLUGINS) \
	$(TEST_PLUGINS) $(BENCH_TOOL)

# Clients the black-box tests drive asyncd with (redis-cli, curl, headless chromium); installed
# with apt-get when missing, and the tests that need one say so if it could not be.
# promtool (to check /metrics) is unpacked from Debian's prometheus package into build/tools.
test-tools:
	@sh scripts/ensure-packages.sh redis-tools curl chromium zookeeper libzookeeper-mt-dev
	@sh scripts/fetch-promtool.sh $(BUILD)/tools

test: check-gtest test-tools $(TEST_BIN) $(TEST_BIN_SAN) $(TEST_DEPS)
	@$(MAKE) --no-print-directory zk-module
	@echo "== release build =="
	ASYNCD_BIN=$(ASYNCD) ASYNCD_HOOKS_BIN=$(ASYNCD_HOOKS) ASYNCD_ZK_MODULE=$(abspath $(ZK_MODULE)) $(TEST_BIN)
	@echo "== ASan+UBSan build =="
	$(SAN_ENV) ASYNCD_BIN=$(ASYNCD_SAN) ASYNCD_HOOKS_BIN=$(ASYNCD_HOOKS_SAN) ASYNCD_ZK_MODULE=$(abspath $(ZK_MODULE)) $(TEST_BIN_SAN)

asan: check-gtest test-tools $(TEST_BIN_SAN) $(TEST_DEPS)
	@$(MAKE) --no-print-directory zk-module
	$(SAN_ENV) ASYNCD_BIN=$(ASYNCD_SAN) ASYNCD_HOOKS_BIN=$(ASYNCD_HOOKS_SAN) ASYNCD_ZK_MODULE=$(abspath $(ZK_MODULE)) $(TEST_BIN_SAN)

# The long versions of the reliability scenarios (RELIABILITY.md), then their figures as a
# table. RELIABILITY_SCALE (default 100) scales the loops; the scenarios run long at 10+.
RELIABILITY_SCALE ?= 100
# R7 is there twice: the FrameFuzz tests, and the libFuzzer target for
# RELIABILITY_FUZZ_SECONDS (when clang++ is installed), whose figure line joins the log.
RELIABILITY_TESTS := Reliability*:ClusterReliability*:Cluster.AFlood*:Cluster.ALinkThat*:Reload.New*:Wakers/TwoProcess*:GatewayTest.InitService*:GatewayTest.PluginWithAnotherAbi*:FrameFuzz*:Delivery.ReloadThenStop*:Bounds.InputBudget*
reliability: check-gtest $(TEST_BIN) $(TEST_DEPS) $(if $(CLANGXX),$(FRAME_FUZZER) $(WIRE_FUZZER))
	@mkdir -p $(BUILD)
	ASYNCD_TEST_SCALE=$(RELIABILITY_SCALE) ASYNCD_BIN=$(ASYNCD) ASYNCD_HOOKS_BIN=$(ASYNCD_HOOKS) \
	  $(TEST_BIN) --gtest_filter='$(RELIABILITY_TESTS)' | tee $(BUILD)/reliability.log
ifneq ($(CLANGXX),)
	$(call run_frame_fuzzer,$(RELIABILITY_FUZZ_SECONDS),| tee -a $(BUILD)/reliability.log)
	$(call run_wire_fuzzer,$(RELIABILITY_FUZZ_SECONDS),| tee -a $(BUILD)/reliability.log)
else
	@echo "$(FUZZ_SKIPPED)"
endif
	@echo; echo "== reliability figures =="
	@grep '^FIGURE' $(BUILD)/reliability.log | sed 's/^FIGURE //' | sort -V | tee $(BUILD)/reliability-figures.txt

# The fuzzer's flags are kept like a flavour's (above), so that CI's -Werror rebuilds it.
$(BUILD)/fuzz/.flags: FORCE
	@mkdir -p $(dir $@)
	@echo '$(FUZZ_FLAGS)' | cmp -s - $@ || echo '$(FUZZ_FLAGS)' > $@

# One command, two sources: the fuzzer must not drag in the rest of asyncd.
ifneq ($(CLANGXX),)
$(FRAME_FUZZER): fuzz/frame_fuzzer.cc fuzz/frame_model.h conn/frame.cc conn/frame.h \
		core/config.h core/log.h $(BUILD)/fuzz/.flags
	@mkdir -p $(dir $@)
	$(CLANGXX) $(FUZZ_FLAGS) fuzz/frame_fuzzer.cc conn/frame.cc -o $@

$(WIRE_FUZZER): fuzz/wire_fuzzer.cc fuzz/wire_model.h cluster/frames.cc cluster/frames.h \
		cluster/wire.cc cluster/wire.h $(BUILD)/fuzz/.flags
	@mkdir -p $(dir $@)
	$(CLANGXX) $(FUZZ_FLAGS) fuzz/wire_fuzzer.cc cluster/frames.cc cluster/wire.cc -o $@
endif

# Runs fuzzer $(1) (named $(2), figure tag $(3)) for $(4) seconds and prints its figure line
# through $(5) (a pipe, or nothing). It works on a fresh copy of the seed corpus $(6) (none:
# it starts empty) in build/fuzz/$(2)-corpus, so that what it finds stays out of the
# checked-in seeds; its output goes to build/fuzz/$(2)-fuzzer.log, and an input that breaks
# it to build/fuzz/$(2)-crash-*, whose log tail is shown before make stops.
define run_fuzzer
@rm -rf $(BUILD)/fuzz/$(2)-corpus && mkdir -p $(BUILD)/fuzz/$(2)-corpus
$(if $(6),@cp $(6)/* $(BUILD)/fuzz/$(2)-corpus/)
@echo "$(3) libFuzzer: $(1) for $(4) s, log in $(BUILD)/fuzz/$(2)-fuzzer.log"
@$(1) -max_total_time=$(4) -print_final_stats=1 -artifact_prefix=$(BUILD)/fuzz/$(2)- \
  $(BUILD)/fuzz/$(2)-corpus > $(BUILD)/fuzz/$(2)-fuzzer.log 2>&1 || \
  { tail -n 40 $(BUILD)/fuzz/$(2)-fuzzer.log; \
    echo "$(3) libFuzzer: $(2) failed; the input is in $(BUILD)/fuzz/"; exit 1; }
@awk '/^stat::number_of_executed_units:/ { n = $$2 } /^stat::average_exec_per_sec:/ { e = $$2 } \
  /^Done [0-9]+ runs in/ { t = $$5 } \
  END { printf "FIGURE $(3) libfuzzer_runs=%s execs_per_s=%s seconds=%s\n", n, e, t }' \
  $(BUILD)/fuzz/$(2)-fuzzer.log $(5)
endef
run_frame_fuzzer = $(call run_fuzzer,$(FRAME_FUZZER),frame,R7,$(1),$(2),fuzz/corpus)
run_wire_fuzzer = $(call run_fuzzer,$(WIRE_FUZZER),wire,C10,$(1),$(2),)

# A short fuzzing pass over the frame decoder and the cluster's frame reader (FUZZ_SECONDS
# each); the longer ones are part of `make reliability`.
ifneq ($(CLANGXX),)
fuzz: $(FRAME_FUZZER) $(WIRE_FUZZER)
	$(call run_frame_fuzzer,$(FUZZ_SECONDS),)
	$(call run_wire_fuzzer,$(FUZZ_SECONDS),)
else
fuzz:
	@echo "$(FUZZ_SKIPPED)"
endif

run: $(ASYNCD) $(EXAMPLE_PLUGINS)
	@cat etc/talk.txt
	$(ASYNCD) -c etc/asyncd.conf

# Two nodes of etc/cluster: logic in the background (stopped when gate stops), gate here.
run-cluster: $(ASYNCD) $(EXAMPLE_PLUGINS)
	@cat etc/cluster/talk.txt
	@$(ASYNCD) -c etc/cluster/logic.conf & logic=$$!; \
	trap 'kill $$logic 2>/dev/null; wait $$logic' EXIT INT TERM; \
	$(ASYNCD) -c etc/cluster/gate.conf

# The two-node RESP store of etc/cluster: resp-b in the background, resp-a here.
run-resp-cluster: $(ASYNCD) $(EXAMPLE_PLUGINS)
	@cat etc/cluster/resp-talk.txt
	@$(ASYNCD) -c etc/cluster/resp-b.conf & b=$$!; \
	trap 'kill $$b 2>/dev/null; wait $$b' EXIT INT TERM; \
	$(ASYNCD) -c etc/cluster/resp-a.conf

# asyncd against ref_echo side by side (bench/run_bench.py; BENCH_ARGS="--quick" for a
# short pass, "--cpu 0" to pin the load generator), the resp and http plugins against
# redis-server and nginx (bench/run_proto_bench.py, PROTO_BENCH_ARGS likewise), two nodes
# calling each other (bench/run_node_bench.py, NODE_BENCH_ARGS), the resp plugin sharded
# over two nodes against twemproxy and redis (bench/run_shard_bench.py, SHARD_BENCH_ARGS),
# then the ring on its own.
bench: $(ASYNCD) $(EXAMPLE_PLUGINS) $(BENCH_TOOL) $(REF_ECHO) $(MIN_CLIENT) $(SHMQ_BENCH) \
		$(NODE_BENCH_SO)
	python3 bench/run_bench.py $(BENCH_ARGS)
	python3 bench/run_proto_bench.py $(PROTO_BENCH_ARGS)
	python3 bench/run_node_bench.py $(NODE_BENCH_ARGS)
	python3 bench/run_shard_bench.py $(SHARD_BENCH_ARGS)
	$(SHMQ_BENCH) -r 3

# make install: the binary, the plugin header, the example plugins and their sources, the
# configs (pointing at the installed plugins, logging to LOGDIR, pid files in RUNDIR), the
# systemd unit and the logrotate snippet, under PREFIX (staged under DESTDIR when set).
# scripts/install.sh does the copying; the install test calls it on the built files.
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= $(PREFIX)/etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
LOGDIR ?= /var/log/asyncd
RUNDIR ?= /run/asyncd
INSTALL_VARS = PREFIX='$(PREFIX)' DESTDIR='$(DESTDIR)' SYSCONFDIR='$(SYSCONFDIR)' \
	UNITDIR='$(UNITDIR)' LOGDIR='$(LOGDIR)' RUNDIR='$(RUNDIR)' \
	ASYNCD='$(ASYNCD)' PLUGIN_DIR='$(BUILD)/plugins' BENCH='$(BENCH_TOOL)'

.PHONY: install uninstall

install: $(ASYNCD) $(EXAMPLE_PLUGINS) $(BENCH_TOOL) zk-module
	@sh scripts/install.sh install $(INSTALL_VARS)

uninstall:
	@sh scripts/install.sh uninstall $(INSTALL_VARS)

FORMAT_SRCS = $(shell git ls-files '*.cc' '*.h' '*.c')

format:
	clang-format -i $(FORMAT_SRCS)

format-check:
	clang-format --dry-run --Werror $(FORMAT_SRCS)

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
