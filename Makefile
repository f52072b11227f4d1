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
TEST_SRCS := $(wildcard test/*/*.cc) $(wildcard test/*.cc)

# One object tree per flavour: build/rel/... and build/san/...
rel_objs = $(patsubst %.cc,$(BUILD)/rel/%.o,$(1))
san_objs = $(patsubst %.cc,$(BUILD)/san/%.o,$(1))

TEST_BIN := $(BUILD)/asyncd-test
TEST_BIN_SAN := $(BUILD)/asyncd-test-san
SHMQ_BENCH := $(BUILD)/shmq-bench

.PHONY: all test asan run bench clean format format-check check-gtest FORCE

all: $(SHMQ_BENCH) $(TEST_BIN)

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

$(SHMQ_BENCH): $(BUILD)/rel/bench/shmq_bench.o $(BUILD)/rel/libshmq.a
	$(CXX) $(RELFLAGS) $^ -o $@ $(LDLIBS)

check-gtest:
	@if [ -z "$(GTEST_HEADER)" ]; then \
	  echo "GoogleTest headers not found. Install them with:"; \
	  echo "    sudo apt-get install -y libgtest-dev"; \
	  exit 1; \
	fi

$(TEST_BIN): $(call rel_objs,$(TEST_SRCS)) $(BUILD)/rel/libshmq.a | check-gtest
	$(CXX) $(RELFLAGS) $^ -o $@ $(GTEST_LIBS) $(LDLIBS)

$(TEST_BIN_SAN): $(call san_objs,$(TEST_SRCS)) $(BUILD)/san/libshmq.a | check-gtest
	$(CXX) $(SANFLAGS) $^ -o $@ $(GTEST_LIBS) $(LDLIBS)

# The test objects need the GoogleTest headers; say so before the compiler does.
$(call rel_objs,$(TEST_SRCS)) $(call san_objs,$(TEST_SRCS)): | check-gtest

test: check-gtest $(TEST_BIN) $(TEST_BIN_SAN)
	@echo "== release build =="
	$(TEST_BIN)
	@echo "== ASan+UBSan build =="
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 $(TEST_BIN_SAN)

asan: check-gtest $(TEST_BIN_SAN)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 $(TEST_BIN_SAN)

run:
	@echo "asyncd: not yet — the gateway does not exist yet; 'make test' and 'make bench' do."

bench: $(SHMQ_BENCH)
	$(SHMQ_BENCH)

FORMAT_SRCS = $(shell git ls-files '*.cc' '*.h' '*.c')

format:
	clang-format -i $(FORMAT_SRCS)

format-check:
	clang-format --dry-run --Werror $(FORMAT_SRCS)

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
