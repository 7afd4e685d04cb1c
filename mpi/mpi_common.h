/* What clattn_mpi's calls share: agreeing on a status, waiting on the device while driving MPI,
 * byte spans of views, the layouts' positions, and one call's transient buffers. Uses only
 * clattn.h's public API. */
#ifndef CLATTN_MPI_COMMON_H
#define CLATTN_MPI_COMMON_H

#include "clattn_mpi.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Each rank's description, all-gathered before any data moves. */
enum {
    M_B,
    M_HQ,
    M_HKV,
    M_D,
    M_DV,
    M_NQ,
    M_NK,
    M_DTYPE,
    M_LAYOUT,
    M_CAUSAL,
    M_WL,
    M_WR,
    M_KEEP,
    M_FLAGS,
    M_KSPAN,
    M_VSPAN,
    M_KS,            /* K's 4 strides */
    M_VS = M_KS + 4, /* V's 4 strides */
    M_N = M_VS + 4
};

/* What one rank can check alone of a ring or head-split call: everything but the agreement
 * between ranks (clattn_sdpa's own validation of the local block, which also builds its
 * kernels). */
clattn_status clattn_mpi__validate(clattn_context *ctx, cl_command_queue queue,
                                   const clattn_tensor *Q, const clattn_tensor *K,
                                   const clattn_tensor *V, const clattn_tensor *O,
                                   const clattn_tensor *lse, const clattn_mpi_ring_params *rp);
/* This rank's description (meta[M_N]); NULL tensors leave zeros (the call fails anyway). */
void clattn_mpi__describe(int64_t *meta, const clattn_tensor *Q, const clattn_tensor *K,
                          const clattn_tensor *V, const clattn_mpi_ring_params *rp);
/* Whether the ranks' descriptions agree (the same verdict on every rank: the same data); every
 * rank's query and key counts and their sums. */
clattn_status clattn_mpi__consistent(const int64_t *meta, int P, const clattn_mpi_ring_params *rp,
                                     int64_t *nq, int64_t *nk, int64_t *Tq, int64_t *Tk);

/* A communicator of the call's own (*own, a duplicate of comm, so that its messages never meet
 * the caller's; MPI_Comm_free it), this rank's number and the ranks' count. */
clattn_status clattn_mpi__open(MPI_Comm comm, MPI_Comm *own, int *rank, int *size);

/* The first nonzero of every rank's `local`, in rank order (0 when all are 0), returned on every
 * rank. CLATTN_ERROR_COMMUNICATION when the all-gather itself fails. */
clattn_status clattn_mpi__agree(MPI_Comm comm, clattn_status local);

/* Waits until `event` (may be NULL) has completed and the `n` requests are done, polling both;
 * adds to *waiting the time spent with the device done and the requests not. The event's
 * failure (a negative execution status) or MPI's is returned. */
clattn_status clattn_mpi__wait(cl_event event, MPI_Request *reqs, int n, double *waiting);

/* The bytes [*begin, *end) a view reaches in its buffer (both 0 for an empty view). */
void clattn_mpi__span(const clattn_tensor *t, size_t *begin, size_t *end);

/* A run of a rank's rows at evenly spaced positions: rows local0 .. local0 + n - 1 of its
 * chunk hold positions pos0, pos0 + stride, ... */
typedef struct clattn_mpi_piece {
    size_t local0, n;
    int64_t pos0, stride;
} clattn_mpi_piece;

/* Rank r's pieces (1 or 2; returned) of a sequence of T positions among P ranks under the
 * layout; counts[] (every rank's count) is used by CLATTN_MPI_CONTIGUOUS. */
int clattn_mpi__pieces(clattn_mpi_layout layout, int r, int P, const int64_t *counts,
                       clattn_mpi_piece pieces[2]);

/* The count rank r must hold under the layout (CLATTN_MPI_CONTIGUOUS: any, returns -1). */
int64_t clattn_mpi__layout_count(clattn_mpi_layout layout, int r, int P, int64_t T);

/* A view of rows [first, first + n) of t along dim 2, and of batch item b (b < 0: all). */
clattn_tensor clattn_mpi__rows(const clattn_tensor *t, size_t first, size_t n, long b);

/* A dense [B, H, T, D] float view at element offset 0 of buf. */
clattn_tensor clattn_mpi__dense(cl_mem buf, clattn_dtype dtype, size_t B, size_t H, size_t T,
                                size_t D);

/* Releases an event when not NULL. */
void clattn_mpi__release(cl_event *e);

/* Reads view t (CLATTN_F32, any strides) into dense host floats in its dims' order; blocking. */
clattn_status clattn_mpi__read_dense(cl_command_queue queue, const clattn_tensor *t, float *out);

/* A new device buffer of `bytes` (at least 4); on failure *st takes the error (if it held
 * none) and NULL is returned. */
cl_mem clattn_mpi__buffer(cl_context context, size_t bytes, clattn_status *st);

/* Writes dense results into the caller's views: O_out (any strides) and lse_out (or NULL) from
 * O [B, H, T, Dv] and lse [B, H, T, 1] on the device, by clattn_merge with a part that saw no
 * key (lse −inf in `neg`, B·H·T floats this fills), which gives O and lse back exactly. The
 * commands wait on *last and the newest becomes *last. */
clattn_status clattn_mpi__store(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *O,
                                const clattn_tensor *lse, cl_mem neg, const clattn_tensor *O_out,
                                const clattn_tensor *lse_out, cl_event *last);

/* An MPI return code as a clattn status. */
static inline clattn_status clattn_mpi__status(int mpi_rc)
{
    return mpi_rc == MPI_SUCCESS ? CLATTN_SUCCESS : CLATTN_ERROR_COMMUNICATION;
}

#endif
