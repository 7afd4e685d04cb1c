/* clattn-bench's MPI mode (tools/bench_mpi.c), compiled in when Meson finds MPI
 * (CLATTN_BENCH_MPI). */
#ifndef CLATTN_BENCH_MPI_H
#define CLATTN_BENCH_MPI_H

#include <stdbool.h>
#include <stddef.h>

/* Initialises MPI, times ring attention over T tokens of H heads of D (the layout by name:
 * contiguous, zigzag, striped), prints rank 0's summary, finalises MPI; 0 when every call
 * succeeded. */
int bench_mpi_ring(int *argc, char ***argv, size_t T, size_t H, size_t D, bool causal,
                   const char *layout, int reps);

#endif
