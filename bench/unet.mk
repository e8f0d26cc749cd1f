# bench/unet.mk: the CPU U-Net benchmark, flowvar's src/nn/unet.h (bench_unet.c) against torchcfm's
# UNetModelWrapper in PyTorch (peer_unet.py) in the same run with the same thread count. bench/Makefile
# hands these targets over, so from the top level:
#   make -C bench unet         UNET_ROUNDS rounds of [bench_unet, peer_unet.py] per configuration
#                              (UNET_CONFIGS), alternating, each configuration in its own processes so
#                              that each side's peak resident memory is that configuration's (about 8 min)
#   make -C bench record-unet  the same, then its block in ../BENCHMARKS.md (record.py)
# Results in out/unet.md (raw rows in out/unet_*.tsv). Waits first for an idle machine (wait_idle.sh).
# Needs python3 with torch and torchcfm (python3 -m pip install torch torchcfm pot).
# The timed commands of both sides run without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (some machines'
# images set them; a user's does not, and OpenBLAS then picks its kernel for the CPU itself), and with
# OMP_NUM_THREADS (flowvar's oneDNN convolutions and loops) and OPENBLAS_NUM_THREADS equal to torch's
# thread count.

CC ?= cc
BENCH_CFLAGS := -O2 -g -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Werror -I../src -I..
LIB := ../build/libflowvar.a
LDLIBS := $(shell $(MAKE) --no-print-directory -s -C .. print-ldlibs)
HEADERS := $(wildcard ../src/core/*.h ../src/nn/*.h)

ifeq ($(SAN),1)
$(error the benchmarks time the optimised library in ../build; run them without SAN=1)
endif

UNET_ROUNDS ?= 2
UNET_ITERS ?= 5
UNET_REPS ?= 3
UNET_CONFIGS ?= tiny small paper
TIMED := env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE

unet: out/bench_unet
	@python3 -c 'import torch, torchcfm' || { echo "bench: the peer needs torch and torchcfm: python3 -m pip install torch torchcfm pot" >&2; exit 1; }
	. ./wait_idle.sh; \
	rm -f out/unet_*.tsv; start=$$(date +%s); \
	threads=$$($(TIMED) out/bench_unet --info | awk -F'\t' '$$2 == "blas_threads" { print $$3; exit }'); \
	{ echo "meta	date_utc	$$(date -u '+%Y-%m-%d %H:%M UTC')"; echo "meta	loadavg_start	$$(cut -d' ' -f1-3 /proc/loadavg)"; \
	  echo "meta	threads	$$threads"; } >out/unet_run.tsv; \
	r=1; while [ $$r -le $(UNET_ROUNDS) ]; do \
	    for cfg in $(UNET_CONFIGS); do \
	        echo "bench: round $$r: $$cfg: flowvar" >&2; \
	        $(TIMED) OMP_NUM_THREADS=$$threads OPENBLAS_NUM_THREADS=$$threads out/bench_unet --config $$cfg \
	            --iters $(UNET_ITERS) --reps $(UNET_REPS) >out/unet_c_r$${r}_$$cfg.tsv || exit 1; \
	        echo "bench: round $$r: $$cfg: torch" >&2; \
	        $(TIMED) OMP_NUM_THREADS=$$threads OPENBLAS_NUM_THREADS=$$threads python3 peer_unet.py --config $$cfg \
	            --iters $(UNET_ITERS) --reps $(UNET_REPS) --threads $$threads >out/unet_torch_r$${r}_$$cfg.tsv || exit 1; \
	    done; \
	    r=$$((r + 1)); \
	done; \
	{ echo "meta	loadavg_end	$$(cut -d' ' -f1-3 /proc/loadavg)"; echo "meta	wall_s	$$(($$(date +%s) - start))"; } >>out/unet_run.tsv
	python3 peer_unet.py --report out >out/unet.md
	@echo "bench: results in bench/out/unet.md" >&2

record-unet: unet
	python3 record.py unet out/unet.md ../BENCHMARKS.md
	@echo "bench: recorded in BENCHMARKS.md (unet block)" >&2

# In out/ (ignored by git) with the results.
out/bench_unet: bench_unet.c $(LIB) $(HEADERS)
	@mkdir -p out
	$(CC) $(BENCH_CFLAGS) -o $@ bench_unet.c $(LIB) $(LDLIBS)

# Invoked directly (not after a top-level build): build the library first.
$(LIB):
	$(MAKE) -C .. build/libflowvar.a

# The GPU U-Net benchmark (bench_unet_cuda.c and peer_unet_cuda.py), run on a GPU machine with
# bench/run_unet_cuda.sh; needs the CUDA build of ../build/libflowvar.a (and CUDA's headers here).
bench_unet_cuda: bench_unet_cuda.c $(LIB) $(HEADERS) ../cuda/unet_cuda.h
	$(CC) $(BENCH_CFLAGS) -isystem $(dir $(shell command -v nvcc))../include -o $@ bench_unet_cuda.c $(LIB) $(LDLIBS)

clean-unet:
	rm -f out/bench_unet out/unet* bench_unet_cuda

.PHONY: unet record-unet clean-unet bench_unet_cuda
