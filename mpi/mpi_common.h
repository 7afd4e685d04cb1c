/* What clattn_mpi's calls share: agreeing on a status, waiting on the device while driving MPI,
 * byte spans of views, the layouts' positions, and one call's transient buffers. Uses only
 * clattn.h's public API. */
#ifndef CLATTN_MPI_COMMON_H
#define CLATTN_MPI_COMMON_H

#include "clattn_mpi.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/* An MPI return code as a clattn status. */
static inline clattn_status clattn_mpi__status(int mpi_rc)
{
    return mpi_rc == MPI_SUCCESS ? CLATTN_SUCCESS : CLATTN_ERROR_COMMUNICATION;
}

#endif
