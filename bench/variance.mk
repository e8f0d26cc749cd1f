# bench/variance.mk: the exact-variance benchmark (bench_variance.c) and the training benchmark
# (bench_train.c with its PyTorch peer peer_train.py). bench/Makefile hands these targets over, so from
# the top level:
#   make -C bench variance         bench_variance: exact vs Monte Carlo, d = 2, 50, 784 (about 1.5 min)
#   make -C bench train            bench_train and peer_train.py interleaved (about 2.5 min)
#   make -C bench record-variance  the same as `variance`, then its block in ../BENCHMARKS.md
#   make -C bench record-train     the same as `train`, then its block in ../BENCHMARKS.md
# (or make -C bench -f variance.mk TARGET). Results in out/variance.md and out/train.md. Each run first
# waits for an idle machine (wait_idle.sh: no other benchmark running, load average below 0.5).

CC ?= cc
BENCH_CFLAGS := -O2 -g -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Werror -I../src -I..
LIB := ../build/libflowvar.a
LDLIBS := $(shell $(MAKE) --no-print-directory -s -C .. print-ldlibs)
HEADERS := $(wildcard ../src/core/*.h ../gaussian/*.h ../src/nn/*.h)

ifeq ($(SAN),1)
$(error the benchmarks time the optimised library in ../build; run them without SAN=1)
endif

all: variance train

variance: bench_variance
	./run_variance.sh

train: bench_train
	./run_train.sh

record-variance: bench_variance
	./run_variance.sh --record

record-train: bench_train
	./run_train.sh --record

bench_variance: bench_variance.c $(LIB) $(HEADERS)
	$(CC) $(BENCH_CFLAGS) -o $@ bench_variance.c $(LIB) $(LDLIBS)

bench_train: bench_train.c $(LIB) $(HEADERS)
	$(CC) $(BENCH_CFLAGS) -o $@ bench_train.c $(LIB) $(LDLIBS)

# Invoked directly (not after a top-level build): build the library first.
$(LIB):
	$(MAKE) -C .. build/libflowvar.a

clean-variance:
	rm -f bench_variance bench_train out/variance.* out/train*

.PHONY: all variance train record-variance record-train clean-variance

# The GPU benchmark (bench_train_cuda.c and peer_train_cuda.py), run on a GPU machine with
# bench/run_train_cuda.sh; needs the CUDA build of ../build/libflowvar.a.
bench_train_cuda: bench_train_cuda.c $(LIB) $(HEADERS)
	$(CC) $(BENCH_CFLAGS) -I$(dir $(shell command -v nvcc))../include -o $@ bench_train_cuda.c $(LIB) $(LDLIBS)
