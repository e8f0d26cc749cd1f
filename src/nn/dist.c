/* dist.c: the ranks of a data-parallel training job over MPI (see dist.h). Built against MPI when the
 * Makefile finds it (FV_HAVE_MPI); without it a process is always rank 0 of 1, and a launcher that
 * started several is refused. */
#include "nn/dist.h"

#include "core/error.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef FV_HAVE_MPI
#include <mpi.h>
#endif

/* What each launcher sets in its processes' environment: Open MPI's mpirun, PMIx (srun --mpi=pmix,
 * Open MPI 5's prterun), PMI (MPICH's hydra, srun --mpi=pmi2). */
static const char *const launcher_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"};

int fv_dist_launched(void)
{
    for (size_t i = 0; i < sizeof launcher_vars / sizeof *launcher_vars; i++)
        if (getenv(launcher_vars[i]))
            return 1;
    return 0;
}

int fv_dist_shard(const fv_dist *g, size_t batch, size_t *rows, size_t *row0)
{
    if (batch % (size_t)g->size != 0)
        return fv_error(FV_EINPUT, "--batch %zu does not split into %d equal shards (one per rank): give a multiple of %d",
                        batch, g->size, g->size);
    *rows = batch / (size_t)g->size;
    *row0 = (size_t)g->rank * *rows;
    return FV_OK;
}

#ifdef FV_HAVE_MPI

static int mpi_failed(int rc, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS)
        snprintf(msg, sizeof msg, "MPI error %d", rc);
    return fv_error(FV_EIO, "%s across the ranks failed: %s", what, msg);
}

/* The rank among the job's processes that share this machine's memory. */
static int local_rank(int *out)
{
    MPI_Comm node;
    int rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    if (rc == MPI_SUCCESS) {
        rc = MPI_Comm_rank(node, out);
        MPI_Comm_free(&node);
    }
    return rc == MPI_SUCCESS ? FV_OK : mpi_failed(rc, "finding the ranks on this machine");
}

int fv_dist_init(fv_dist *g)
{
    memset(g, 0, sizeof *g);
    g->size = 1;
    if (!fv_dist_launched())
        return FV_OK;
    if (MPI_Init(NULL, NULL) != MPI_SUCCESS)
        return fv_error(FV_EIO, "MPI_Init failed: this process cannot join its job");
    g->joined = 1;
    /* statuses instead of MPI's default abort, so a failed reduction is reported like any error */
    int rc = MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (rc == MPI_SUCCESS && (rc = MPI_Comm_rank(MPI_COMM_WORLD, &g->rank)) == MPI_SUCCESS)
        rc = MPI_Comm_size(MPI_COMM_WORLD, &g->size);
    if (rc != MPI_SUCCESS)
        return mpi_failed(rc, "joining the job");
    int st = local_rank(&g->local_rank);
    if (!st && fv_cuda_available())
        st = fv_cuda_use_device((size_t)g->local_rank);
    return st;
}

void fv_dist_free(fv_dist *g)
{
    fv_cuda_comm_free(g->gpu);
    if (g->joined)
        MPI_Finalize();
    memset(g, 0, sizeof *g);
    g->size = 1;
}

int fv_dist_agree(const fv_dist *g, int st)
{
    if (!g->joined)
        return st;
    struct {
        int code, rank;
    } mine = {st, g->rank}, worst;
    int rc = MPI_Allreduce(&mine, &worst, 1, MPI_2INT, MPI_MAXLOC, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        return st ? st : mpi_failed(rc, "agreeing on a status");
    if (st || worst.code == FV_OK)
        return st;
    return fv_error(worst.code, "rank %d of %d failed (its message above); this rank stops with it", worst.rank,
                    g->size);
}

int fv_dist_bcast(const fv_dist *g, void *buf, size_t bytes)
{
    if (!g->joined)
        return FV_OK;
    int rc = bytes > INT_MAX ? MPI_ERR_COUNT : MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? FV_OK : mpi_failed(rc, "a broadcast");
}

/* The host gradient (tr->grads, FV_GRAD_TAIL floats of room after it) summed over the ranks in place
 * with the tail, then averaged: each rank's gradient is the mean over its B / R rows. */
static int host_allreduce(const fv_dist *g, fv_trainer *tr, float *tail)
{
    size_t n = tr->nparams;
    if (n + FV_GRAD_TAIL > INT_MAX)
        return fv_error(FV_EINPUT, "%zu parameters exceed one MPI reduction (at most %d values)", n, INT_MAX);
    memcpy(tr->grads + n, tail, FV_GRAD_TAIL * sizeof *tail);
    int rc = MPI_Allreduce(MPI_IN_PLACE, tr->grads, (int)(n + FV_GRAD_TAIL), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        return mpi_failed(rc, "the gradient reduction");
    float inv = 1.0f / (float)g->size; /* exact for 2, 4, 8, ... ranks */
    for (size_t k = 0; k < n; k++)
        tr->grads[k] *= inv;
    tail[0] = tr->grads[n] * inv;
    tail[1] = tr->grads[n + 1];
    return FV_OK;
}

int fv_dist_reduce(fv_dist *g, fv_trainer *tr, float *loss, int st)
{
    /* the loss and the failure count travel with the gradient: [0] loss (mean after the reduction), [1]
     * ranks that failed (nonzero after it when any did) */
    float tail[FV_GRAD_TAIL] = {st ? 0.0f : *loss, st ? 1.0f : 0.0f};
    if (!g->joined)
        return st;
    int rc = tr->ops->allreduce ? tr->ops->allreduce(tr, g, tail) : host_allreduce(g, tr, tail);
    if (st)
        return st;
    if (rc)
        return rc;
    if (tail[1] != 0.0f)
        return fv_error(FV_EIO, "another rank of the %d failed at this step (its message above); this rank stops "
                                "with it",
                        g->size);
    *loss = tail[0];
    return FV_OK;
}

#else /* no MPI in this build */

int fv_dist_init(fv_dist *g)
{
    memset(g, 0, sizeof *g);
    g->size = 1;
    const char *n = getenv("OMPI_COMM_WORLD_SIZE") ? getenv("OMPI_COMM_WORLD_SIZE") : getenv("PMI_SIZE");
    if (fv_dist_launched() && !(n && strcmp(n, "1") == 0))
        return fv_error(FV_EINPUT, "this flowvar was built without MPI, so a launcher's processes would each train "
                                   "alone: install libopenmpi-dev (scripts/install-deps) and rebuild");
    return FV_OK;
}

void fv_dist_free(fv_dist *g)
{
    memset(g, 0, sizeof *g);
    g->size = 1;
}

int fv_dist_agree(const fv_dist *g, int st)
{
    (void)g;
    return st;
}

int fv_dist_bcast(const fv_dist *g, void *buf, size_t bytes)
{
    (void)g, (void)buf, (void)bytes;
    return FV_OK;
}

int fv_dist_reduce(fv_dist *g, fv_trainer *tr, float *loss, int st)
{
    (void)g, (void)tr, (void)loss;
    return st;
}

#endif
