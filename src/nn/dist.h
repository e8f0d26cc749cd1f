/* dist.h: data-parallel training over the processes of an MPI job (started by mpirun or srun). Every
 * rank holds the whole trainer state and trains on its contiguous shard of each batch (rows
 * [rank B/R, (rank + 1) B/R) of the B rows one process would draw: the draws are a function of
 * (seed, step, row), so the shards together are that batch); one all-reduce per step sums the
 * gradients, the loss and a failure count (MPI_Allreduce on the CPU, ncclAllReduce in a CUDA run, one
 * GPU per rank), so every rank takes the same update and all stop together. A process not started by
 * a launcher touches no MPI at all and is rank 0 of 1. */
#ifndef FV_DIST_H
#define FV_DIST_H

#include "nn/trainer.h"

#include <stddef.h>

typedef struct fv_dist {
    int rank, size;  /* this process's rank among `size`; 0 of 1 without a launcher */
    int local_rank;  /* its rank among the job's processes on this machine (which GPU it takes) */
    int joined;      /* MPI_Init was called: started by a launcher, in an MPI build */
    void *gpu;       /* a CUDA run's NCCL communicator, made by its first reduction (cuda/trainer_cuda.cu) */
} fv_dist;

/* 1 when a launcher (Open MPI's mpirun, PMIx as srun --mpi=pmix, PMI as MPICH's or srun --mpi=pmi2)
 * started this process: its environment says so. */
int fv_dist_launched(void);

/* Join the job when launched (MPI_Init, MPI errors returned as statuses, one GPU per rank of a
 * machine where CUDA devices are present); rank 0 of 1 otherwise. FV_EINPUT when a launcher started
 * several processes of a flowvar built without MPI (each would train alone into the same folder). */
int fv_dist_init(fv_dist *g);

/* Leave the job (MPI_Finalize) and free the NCCL communicator; safe on rank 0 of 1. */
void fv_dist_free(fv_dist *g);

/* The shard of a batch of B rows: *rows = B / size rows from *row0 = rank * rows. FV_EINPUT naming
 * both numbers unless size divides B. */
int fv_dist_shard(const fv_dist *g, size_t batch, size_t *rows, size_t *row0);

/* Every rank's status st, so that all go on or all stop: st itself where it is not FV_OK; else, when
 * another rank failed, that rank's status (the highest code; the lowest such rank) with a message
 * naming it. One small all-reduce; FV_OK at once on rank 0 of 1. */
int fv_dist_agree(const fv_dist *g, int st);

/* Rank 0's `bytes` at buf to every rank (the NCCL communicator's id). */
int fv_dist_bcast(const fv_dist *g, void *buf, size_t bytes);

/* A training step's one all-reduce: this rank's status st and, unless it failed, its shard's gradient
 * (the backend's buffer) and *loss (both means over its rows) become the whole batch's mean gradient
 * and loss on every rank; the only difference from one process drawing the whole batch is the order
 * of one sum per value. Returns st where it is not FV_OK, else an error when any rank failed (or the
 * reduction did). */
int fv_dist_reduce(fv_dist *g, fv_trainer *tr, float *loss, int st);

#endif
