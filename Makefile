# asyncd — build, test, run, bench.
#
#   make            build everything into build/
#   make test       build and run every GoogleTest binary, then the ASan+UBSan flavour
#   make asan       the ASan+UBSan flavour alone
#   make run        start asyncd on etc/asyncd.conf with the echo plugin
#   make bench      run the benchmarks and print their figures
#   make format     clang-format every source file; make format-check only checks
#
# Warnings are errors when CI is set in the environment (CI=true make test).

CXX ?= g++
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
CORE_SRCS := $(filter-out main/main.cc,$(wildcard main/*.cc conn/*.cc work/*.cc))
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
HOOK_SRCS := conn/conn_server.cc
TEST_BIN := $(BUILD)/asyncd-test
TEST_BIN_SAN := $(BUILD)/asyncd-test-san
SHMQ_BENCH := $(BUILD)/shmq-bench
BENCH_TOOL := $(BUILD)/asyncd-bench
REF_ECHO := $(BUILD)/ref_echo
BENCH_LIB_SRCS := bench/histogram.cc bench/protocol.cc bench/loadgen.cc bench/report.cc

.PHONY: all test asan run bench reliability clean format format-check check-gtest FORCE

all: $(ASYNCD) $(EXAMPLE_PLUGINS) $(SHMQ_BENCH) $(BENCH_TOOL) $(REF_ECHO)

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

$(BUILD)/plugins/%.so: plugin_api/examples/%.c plugin_api/asyncd_plugin.h
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) $< -o $@

$(BUILD)/test-plugins/%.so: test/plugins/%.c plugin_api/asyncd_plugin.h
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) $< -o $@

$(BENCH_TOOL): $(call rel_objs,bench/asyncd_bench.cc $(BENCH_LIB_SRCS))
	$(CXX) $(RELFLAGS) $^ -o $@ $(LDLIBS)

$(REF_ECHO): bench/ref_echo.c
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

test: check-gtest $(TEST_BIN) $(TEST_BIN_SAN) $(TEST_DEPS)
	@echo "== release build =="
	ASYNCD_BIN=$(ASYNCD) ASYNCD_HOOKS_BIN=$(ASYNCD_HOOKS) $(TEST_BIN)
	@echo "== ASan+UBSan build =="
	$(SAN_ENV) ASYNCD_BIN=$(ASYNCD_SAN) ASYNCD_HOOKS_BIN=$(ASYNCD_HOOKS_SAN) $(TEST_BIN_SAN)

asan: check-gtest $(TEST_BIN_SAN) $(TEST_DEPS)
	$(SAN_ENV) ASYNCD_BIN=$(ASYNCD_SAN) ASYNCD_HOOKS_BIN=$(ASYNCD_HOOKS_SAN) $(TEST_BIN_SAN)

# The long versions of the reliability scenarios (RELIABILITY.md), then their figures as a
# table. RELIABILITY_SCALE (default 100) scales the loops; the scenarios run long at 10+.
RELIABILITY_SCALE ?= 100
RELIABILITY_TESTS := Reliability*:Wakers/TwoProcess*:GatewayTest.InitService*:GatewayTest.PluginWithAnotherAbi*
reliability: check-gtest $(TEST_BIN) $(TEST_DEPS)
	@mkdir -p $(BUILD)
	ASYNCD_TEST_SCALE=$(RELIABILITY_SCALE) ASYNCD_BIN=$(ASYNCD) ASYNCD_HOOKS_BIN=$(ASYNCD_HOOKS) \
	  $(TEST_BIN) --gtest_filter='$(RELIABILITY_TESTS)' | tee $(BUILD)/reliability.log
	@echo; echo "== reliability figures =="
	@grep '^FIGURE' $(BUILD)/reliability.log | sed 's/^FIGURE //' | sort -V | tee $(BUILD)/reliability-figures.txt

run: $(ASYNCD) $(EXAMPLE_PLUGINS)
	@cat etc/talk.txt
	$(ASYNCD) -c etc/asyncd.conf

# asyncd against ref_echo side by side (bench/run_bench.py; BENCH_ARGS="--quick" for a
# short pass, "--cpu 0" to pin the load generator), then the ring on its own.
bench: $(ASYNCD) $(EXAMPLE_PLUGINS) $(BENCH_TOOL) $(REF_ECHO) $(SHMQ_BENCH)
	python3 bench/run_bench.py $(BENCH_ARGS)
	$(SHMQ_BENCH) -r 3

FORMAT_SRCS = $(shell git ls-files '*.cc' '*.h' '*.c')

format:
	clang-format -i $(FORMAT_SRCS)

format-check:
	clang-format --dry-run --Werror $(FORMAT_SRCS)

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
