#!/usr/bin/env python3
"""gpu_timing.py: the timed loop the GPU peers share (peer_train_cuda.py, peer_unet_cuda.py)."""
import sys
import time

import torch


def time_steps(step, warmup, reps, steps):
    """W untimed steps, then R repetitions of N timed ones, each ended by a device synchronization:
    prints "steps torch REP SECONDS_PER_STEP" rows, then "memory torch_peak_allocated BYTES", the peak
    of the timed steps (after the warm-up, so that one-time allocations of the first steps do not count
    twice)."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    for rep in range(reps):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        print(f"steps\ttorch\t{rep}\t{(time.perf_counter() - t0) / steps:.9f}")
        sys.stdout.flush()
    print(f"memory\ttorch_peak_allocated\t{torch.cuda.max_memory_allocated()}")
