# flowvar: build, test, benchmark, reproduce, install.
#   make            build/flowvar, build/libflowvar.a, build/libflowvar.so
#   make test       dependency check, then the Criterion suite (SAN=1: ASan+UBSan build)
#   make reproduce  dependency check, then the paper's results into results/
#   make reproduce-images  the image experiments into results/images/
#   make bench      benchmarks against numpy/scipy peers (needs python3 with numpy, scipy)
#   make fuzz       every libFuzzer harness (fuzz/) for FUZZ_SECONDS each (clang; build-fuzz/)
#   make deps       install Debian dependencies (scripts/install-deps)
#   make install PREFIX=/usr/local

PREFIX ?= /usr/local
CC ?= cc
NVCC ?= $(shell command -v nvcc 2>/dev/null)

ifeq ($(SAN),1)
BUILD := build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
else
BUILD := build
SANFLAGS :=
endif

CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Werror -fPIC -Isrc -I. $(SANFLAGS)
LDFLAGS += $(SANFLAGS)
# oneDNN (libdnnl-dev): the U-Net's convolutions (src/nn/conv_dnnl.c); -lgomp: OpenMP's runtime.
LDLIBS := -llapacke -lopenblas -ldnnl -lgomp -lgsl -lpng -lz -lm -lpthread
FUZZ_LDLIBS := $(LDLIBS)

LIB_SRC := $(wildcard src/core/*.c src/data/*.c gaussian/*.c gmm/*.c src/nn/*.c)
CU_SRC := $(wildcard cuda/*.cu)
CLI_SRC := $(wildcard src/cli/*.c)
TEST_SRC := $(wildcard tests/*.c)
HEADERS := $(wildcard src/core/*.h src/data/*.h gaussian/*.h gmm/*.h src/nn/*.h)

LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
# CUDA parts build whenever nvcc is present (sm_90 code plus PTX); a CPU-only build otherwise.
ifneq ($(NVCC),)
ifneq ($(CU_SRC),)
LIB_OBJ += $(CU_SRC:%.cu=$(BUILD)/%.o)
CUDA_LIB := $(realpath $(dir $(NVCC))../lib64)
LDLIBS += -L$(CUDA_LIB) -Wl,-rpath,$(CUDA_LIB) -lcublas -lcudart -lstdc++
CFLAGS += -DFV_HAVE_CUDA
# C code that calls the device layers directly (the U-Net parity table) includes CUDA's headers.
CUDA_INC := $(realpath $(dir $(NVCC))../include)
$(BUILD)/tests/test_cuda_unet.o: CFLAGS += -isystem $(CUDA_INC)
endif
endif
# MPI (data-parallel training, src/nn/dist.c) when Open MPI's pkg-config file or an mpicc is found;
# `make MPI=0` builds without it. The fuzz build above never has it.
ifneq ($(MPI),0)
MPI_CFLAGS := $(shell pkg-config --cflags ompi-c 2>/dev/null || mpicc --showme:compile 2>/dev/null)
MPI_LIBS := $(shell pkg-config --libs ompi-c 2>/dev/null || mpicc --showme:link 2>/dev/null)
endif
ifneq ($(MPI_LIBS),)
CFLAGS += -DFV_HAVE_MPI
LDLIBS += $(MPI_LIBS)
$(BUILD)/src/nn/dist.o: CFLAGS += $(patsubst -I%,-isystem %,$(MPI_CFLAGS))
else
$(info flowvar: building without MPI (one process per training run); for mpirun: scripts/install-deps, then make)
endif
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)

all: $(BUILD)/flowvar $(BUILD)/libflowvar.a $(BUILD)/libflowvar.so

# The network layer's elementwise loops (the SiLU through nn_math.h's fv_expf_fast, the Adam update)
# vectorize only with gcc's vectorizer cost model above -O2's "very-cheap" (which refuses loops of
# unknown length), for Adam's sqrtf without errno (sqrtps rounds exactly as sqrtss: same results), and
# without FP-exception semantics (else PRE splits fv_expf_fast's clamping selects into branches). None
# of the three changes a computed value.
$(BUILD)/src/nn/%.o: CFLAGS += -fvect-cost-model=dynamic -fno-math-errno -fno-trapping-math
# The Gaussian draws (rng.c's normal_lanes: Philox, logarithm, sine and cosine in vector lanes) for the
# same reasons, and without contraction into fused multiply-adds, so that the AVX2 and AVX-512 clones
# give the scalar code's bits.
$(BUILD)/src/core/rng.o: CFLAGS += -fvect-cost-model=dynamic -fno-math-errno -fno-trapping-math -ffp-contract=off
# The U-Net's layers thread their loops with OpenMP (libgomp, the runtime oneDNN's Debian build
# threads its convolutions with, so the two share one pool of threads).
$(BUILD)/src/nn/unet_layers.o: CFLAGS += -fopenmp

# The commands also depend on the CLI's own headers (not installed with the library's).
$(CLI_OBJ): $(wildcard src/cli/*.h)

$(BUILD)/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# -fmad=false: no contraction of a * b + c into one fma, so the per-element formulas the CPU and the GPU
# share (nn_math.h, philox.h, noise.h) round the same way on both.
$(BUILD)/%.o: %.cu $(HEADERS) $(wildcard cuda/*.h)
	@mkdir -p $(dir $@)
	$(NVCC) -O2 -std=c++17 -fmad=false -Xcompiler -fPIC,-Wall,-Werror -Werror all-warnings -Isrc -I. \
		-gencode arch=compute_90,code=[sm_90,compute_90] -c $< -o $@

$(BUILD)/libflowvar.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libflowvar.so: $(LIB_OBJ)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/flowvar: $(CLI_OBJ) $(BUILD)/libflowvar.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libflowvar.a $(LDLIBS)

$(BUILD)/test_flowvar: $(TEST_OBJ) $(BUILD)/libflowvar.a
	$(CC) $(LDFLAGS) -o $@ $(TEST_OBJ) $(BUILD)/libflowvar.a -lcriterion $(LDLIBS)

# The link line of a program built on libflowvar.a (the benchmarks use it).
print-ldlibs:
	@echo $(LDLIBS)

deps:
	scripts/install-deps

# The dependency check that `make test` and `make reproduce` run first (installs what is missing).
deps-check:
	@scripts/install-deps

# The Criterion suites run again under ASan+UBSan in `make test`: every parser (io, safetensors, data),
# every command's error paths and the kill test (cli; less its two longest image runs), import (less gap's
# Gaussian fit of 3072-pixel images), checkpoints and training (cfm, mlp, optim, par, the shards of
# dist_shard), the finite-data engine and copies (empirical, copies), and the memory-heavy layers (unet,
# unet_layers, unet_fast); the purely numerical suites (field, variance*, unet_train, cuda*) run on the
# normal build only, to keep `make test` short, and so do the mpirun runs (dist: Open MPI's own
# allocations at exit would read as leaks).
SAN_SUITES := @(@(io|safetensors|data|cfm|mlp|optim|par|rng|linalg|gmm|kernel|unet|unet_layers|unet_fast|empirical|copies|dist_shard)/*|cli/!(image_runs_gap_samples_and_gradient_variance|memorize_tables_on_fashion_mnist_pairs)|import/!(unet_gap_and_gradvar_run))

# `make test` (what CI runs) is four stages, the Criterion suite last so that its Synthesis line
# closes the output: (1) fuzz-check, every fuzz harness on its regressions, then FUZZ_CHECK_SECONDS
# of fuzzing; (2) the Criterion suites in SAN_SUITES under ASan+UBSan (build-san/; the CLI tests run
# build-san/flowvar); (3) the Python package's tests (test-python); (4) the whole suite on the normal
# build. `make test SAN=1` is stages 3 and 4 on the sanitizer build. Criterion runs two tests at a time,
# each with as many OpenMP threads as cores: with libgomp's default spin-waiting, each process's idle
# threads spin on the cores the other's working threads need (a tiny U-Net resume test: 26 s instead of
# 2.4 s), so the suites run with OMP_WAIT_POLICY=passive (the same results: they depend on the thread
# count alone).
TEST_ENV := OMP_WAIT_POLICY=passive LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp
test: deps-check
	$(MAKE) --no-print-directory $(BUILD)/flowvar $(BUILD)/test_flowvar
ifneq ($(SAN),1)
	$(MAKE) --no-print-directory SAN=1 build-san/flowvar build-san/test_flowvar
	$(MAKE) --no-print-directory fuzz-check
	FLOWVAR=build-san/flowvar $(TEST_ENV) build-san/test_flowvar -j2 \
		--filter '$(SAN_SUITES)'
endif
	$(MAKE) --no-print-directory test-python
	FLOWVAR=$(BUILD)/flowvar $(TEST_ENV) $(BUILD)/test_flowvar --verbose=1 -j2

# ------------------------------------------------------------------------------------------------
# libFuzzer harnesses (fuzz/fuzz_*.c): the library (CPU only) and the CLI's parser objects rebuilt
# with clang under ASan+UBSan and the fuzzer's coverage into build-fuzz/. `make fuzz` runs each
# harness for FUZZ_SECONDS on its seeds (fuzz/corpus/NAME) and found regressions
# (tests/fuzz-regressions/NAME), growing a working corpus in build-fuzz/corpus/NAME; a crash is
# written to build-fuzz/crashes/NAME/ (minimize it with -minimize_crash=1 into tests/fuzz-regressions).
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_CHECK_SECONDS ?= 5
FUZZ_BUILD := build-fuzz
FUZZ_NAMES := npy safetensors idx cifar checkpoint args
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS := -O1 -g -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Werror -Isrc -I. \
	$(FUZZ_SAN)
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(FUZZ_BUILD)/%.o)
FUZZ_CLI_OBJ := $(FUZZ_BUILD)/src/cli/args.o $(FUZZ_BUILD)/src/cli/cli.o $(FUZZ_BUILD)/src/cli/run.o
FUZZ_BIN := $(FUZZ_NAMES:%=$(FUZZ_BUILD)/fuzz_%)
# The fuzzer's run options: a slow input (a pathological header) is a finding too, and so is any
# single allocation above the RSS limit (a reader that sizes a buffer from a header before checking it).
FUZZ_OPTS := -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
# `make test` fails on memory errors, undefined behaviour, leaks and hangs, not on a reader that sizes a
# buffer from a header: allocations above 2 GB come back NULL there (as on a small machine), and the
# reader must report that cleanly (FV_ENOMEM) instead of crashing.
FUZZ_CHECK_OPTS := $(FUZZ_OPTS)
FUZZ_CHECK_ASAN := allocator_may_return_null=1:max_allocation_size_mb=2048:detect_leaks=1

$(FUZZ_BUILD)/%.o: %.c $(HEADERS) $(wildcard src/cli/*.h) fuzz/fuzz.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BUILD)/libflowvar.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/fuzz/fuzz_%.o $(FUZZ_BUILD)/fuzz/fuzz.o $(FUZZ_CLI_OBJ) $(FUZZ_BUILD)/libflowvar.a
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $(filter %.o,$^) $(FUZZ_BUILD)/libflowvar.a $(FUZZ_LDLIBS)

fuzz-build: $(FUZZ_BIN)
.SECONDARY: $(FUZZ_NAMES:%=$(FUZZ_BUILD)/fuzz/fuzz_%.o) $(FUZZ_BUILD)/fuzz/fuzz.o $(FUZZ_CLI_OBJ)

# Regressions first (each file once), then FUZZ_SECONDS of fuzzing per harness.
fuzz: fuzz-build
	@fail=0; for h in $(FUZZ_NAMES); do \
		fuzz/run $(FUZZ_BUILD) $$h $(FUZZ_SECONDS) $(FUZZ_OPTS) || fail=1; \
	done; exit $$fail

# The bounded fuzz stage of `make test`: the same, FUZZ_CHECK_SECONDS per harness.
fuzz-check: fuzz-build
	@fail=0; for h in $(FUZZ_NAMES); do \
		ASAN_OPTIONS=$(FUZZ_CHECK_ASAN) fuzz/run $(FUZZ_BUILD) $$h $(FUZZ_CHECK_SECONDS) $(FUZZ_CHECK_OPTS) || fail=1; \
	done; exit $$fail

# The CUDA parity suite alone (each test prints a skip line where no GPU is present).
test-cuda: deps-check
	$(MAKE) $(BUILD)/flowvar $(BUILD)/test_flowvar
	FLOWVAR=$(BUILD)/flowvar bash -o pipefail -c "$(BUILD)/test_flowvar --verbose=1 --filter 'cuda*/*' 2>&1 | grep -v 'Test is disabled'"

reproduce: deps-check
	$(MAKE) $(BUILD)/flowvar
	scripts/reproduce $(BUILD)/flowvar results

# The image experiments (Fashion-MNIST) into results/images (under 30 minutes on 2 cores).
reproduce-images: deps-check
	$(MAKE) $(BUILD)/flowvar
	scripts/reproduce --images $(BUILD)/flowvar results

# All three benchmarks, each recording its block of BENCHMARKS.md (about 10 minutes on 2 cores).
bench: all
	$(MAKE) -C bench
	$(MAKE) -C bench record-variance record-train

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(BUILD)/flowvar $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(BUILD)/libflowvar.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libflowvar.so $(DESTDIR)$(PREFIX)/lib/
	for h in $(HEADERS); do install -D -m 644 $$h $(DESTDIR)$(PREFIX)/include/flowvar/$${h#src/}; done
	install -d $(DESTDIR)$(PREFIX)/share/flowvar/plots
	install -m 644 plots/*.gp $(DESTDIR)$(PREFIX)/share/flowvar/plots/
	install -d $(DESTDIR)$(PREFIX)/share/flowvar/scripts
	install -m 755 scripts/reproduce $(DESTDIR)$(PREFIX)/share/flowvar/scripts/
	sed -e 's|@PREFIX@|$(PREFIX)|' flowvar.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/flowvar.pc

clean:
	rm -rf build build-san build-fuzz

.PHONY: all print-ldlibs deps deps-check test test-cuda fuzz fuzz-build fuzz-check reproduce reproduce-images bench install clean

# The Python package's tests (python/tests: the package against this build's library and CLI). Needs a
# python3 with numpy and pytest: Debian's (apt-get install python3-numpy python3-pytest).
PYTHON ?= /usr/bin/python3
# SAN=1: the sanitized library loads into Python only behind the sanitizers' runtimes; Python's own
# allocations are not leak-checked, and the tests' deliberate huge allocation must fail, not abort.
ifeq ($(SAN),1)
PYTHON_SAN := LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1
endif
test-python:
	$(MAKE) $(BUILD)/flowvar $(BUILD)/libflowvar.so
	$(PYTHON_SAN) FLOWVAR=$(BUILD)/flowvar FLOWVAR_LIB=$(CURDIR)/$(BUILD)/libflowvar.so $(PYTHON) -m pytest -q python/tests

.PHONY: test-python
