/*
 * clattn_mpi — attention over a sequence split between MPI ranks, each with its own OpenCL
 * device: ring attention, the all-to-all head split, and decoding over a sharded KV cache.
 *
 * A separate library (libclattn_mpi, pkg-config clattn-mpi), built when Meson finds MPI (option
 * -Dmpi=auto|enabled|disabled); it uses only clattn.h's public API, so libclattn itself never
 * depends on MPI.
 *
 * MPI: the caller initialises it (MPI_Init or MPI_Init_thread) and finalises it. The calls here
 * make MPI calls from the calling thread only: MPI_THREAD_SINGLE suffices when one thread of the
 * process uses MPI, MPI_THREAD_SERIALIZED or above when several do. Every call is collective over
 * its communicator: every rank calls it, with the same `comm` and matching arguments, in the same
 * order as the ranks' other collectives on that communicator.
 *
 * Blocking: each call returns when its results are in the caller's buffers (or when it failed).
 * It waits (on the host) for wait_list, enqueues its kernels on the caller's queue, moves K/V
 * blocks through host staging buffers (OpenCL buffers cannot be handed to MPI portably) with
 * non-blocking sends and receives, and while the device computes it polls both: MPI_Testall
 * (which drives MPI's progress) between short sleeps, and the OpenCL event's status. No progress thread. It waits
 * on its own events only, never clFinish on the caller's queue.
 *
 * Errors, agreed: arguments are validated on every rank and the verdict is agreed (an
 * all-gather of every rank's status; the first failing rank's status, in rank order, is
 * returned everywhere) before any data moves, so a bad argument on one rank returns the same
 * error on every rank and nothing hangs. A failure after data moved (a device error on one rank)
 * is agreed the same way at the end of each ring step, and every rank returns it; the caller's
 * O and lse are then unspecified (the ring writes them only in its last phase, after the last
 * step agreed, so a failure before that leaves them as they were). An MPI call that fails
 * follows the communicator's error handler: with MPI_ERRORS_ARE_FATAL (MPI's default) MPI ends
 * the job; with MPI_ERRORS_RETURN the call returns CLATTN_ERROR_COMMUNICATION on that rank, and
 * the other ranks may then block in the next collective (MPI cannot agree over a broken link).
 *
 * Thread safety: the calls keep no state between them; two calls may run at once from different
 * threads only on different communicators and queues (and with MPI_THREAD_MULTIPLE).
 */
#ifndef CLATTN_MPI_H
#define CLATTN_MPI_H

#include <mpi.h>

#include "clattn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How a sequence of T positions (T_q for the queries, T_k for the keys, each the sum of the
 * ranks' token counts) is dealt among P ranks; rank r's tensors hold its positions in
 * increasing order. */
typedef enum clattn_mpi_layout {
    /* Rank r holds positions [start_r, start_r + n_r), start_r the sum of the counts of the ranks
     * below it. Any counts, 0 included. */
    CLATTN_MPI_CONTIGUOUS = 0,
    /* The positions cut into 2P pieces, piece c = [c·T/(2P), (c+1)·T/(2P)) (integer division);
     * rank r holds pieces r and 2P−1−r back to back, so that under a causal mask every rank
     * has about the same work. Each rank's count must be those pieces' (else
     * CLATTN_ERROR_INVALID_SHAPE). */
    CLATTN_MPI_ZIGZAG = 1,
    /* Rank r holds positions r, r + P, r + 2P, … (ceil((T − r)/P) of them): the same balance,
     * in one block per rank. ALiBi and window_keep_first are CLATTN_ERROR_UNSUPPORTED_PATH with
     * it (ALiBi's bias is not a whole-block shift of positions at stride P; a kept key can be
     * visible in a block the window hides). */
    CLATTN_MPI_STRIPED = 2,
} clattn_mpi_layout;

/* What a call measured, for benchmarks (optional). Times in seconds on this rank. */
typedef struct clattn_mpi_stats {
    uint64_t bytes_sent, bytes_received; /* K/V (or Q/K/V/O) bytes this rank sent and received */
    uint64_t blocks_computed, blocks_skipped; /* (query block, key block) pairs; skipped: fully
                                               * hidden by the causal mask, the window or the key
                                               * lengths */
    uint64_t device_bytes;  /* device memory the call allocated (staging, partial results) */
    uint64_t host_bytes;    /* host memory the call allocated (staging for MPI) */
    double seconds;         /* the whole call */
    double seconds_waiting; /* blocked on communication after the device finished */
    uint64_t reserved[7];   /* set to zero */
} clattn_mpi_stats;

typedef struct clattn_mpi_ring_params {
    clattn_mpi_layout layout;
    /* The attention, as clattn_sdpa takes it, over the whole sequence: scale, path, the causal
     * mask (either alignment: over the whole sequence, T_k − T_q), key_lengths (int32 [B] valid
     * keys of the whole sequence, the same on every rank; read to the host once), the window
     * and kept first keys (in positions), soft-capping, ALiBi slopes and sinks (each rank's own
     * buffers, the same values everywhere). Not taken (CLATTN_ERROR_INVALID_ARGUMENT): an
     * additive mask, probs, a workspace, cu_seqlens, a nonzero mask.query_offset (the ring sets
     * it per block). RoPE is the caller's, at global positions, before the call. */
    clattn_sdpa_params attention;
    clattn_mpi_stats *stats; /* NULL, or filled in when the call returns */
    void *reserved[8];       /* must be zero */
} clattn_mpi_ring_params;

CLATTN_API clattn_mpi_ring_params clattn_mpi_ring_params_default(void);

/*
 * Ring attention: rank r holds its chunk of the queries, keys and values (the layout says
 * which positions) and gets its chunk of the output, equal within rounding to clattn_sdpa over
 * the whole sequence. K/V chunks go around the ring, P − 1 steps, each block's transfer
 * overlapping the attention of the block before; partial results merge by log-sum-exp
 * (clattn_merge), sinks are added once at the end (clattn_add_sinks); blocks the causal mask,
 * window or key lengths hide entirely are skipped. Memory per rank: its chunks, one received
 * K/V block and two partial outputs on the device, two K/V blocks on the host. On one rank it
 * is clattn_sdpa itself.
 *   Q [B, Hq, n_q, D]   K [B, Hkv, n_k, D]   V [B, Hkv, n_k, Dv]   O [B, Hq, n_q, Dv]
 *   lse [B, Hq, n_q, 1] CLATTN_F32 or NULL (of the whole sequence's rows, sinks excluded).
 * Q, K, V, O all CLATTN_F32 or all CLATTN_F16 (K/V travel in their storage type); any strides.
 */
CLATTN_API clattn_status clattn_mpi_ring_attention(clattn_context *ctx, cl_command_queue queue,
                                                   MPI_Comm comm, const clattn_tensor *Q,
                                                   const clattn_tensor *K, const clattn_tensor *V,
                                                   const clattn_tensor *O, const clattn_tensor *lse,
                                                   const clattn_mpi_ring_params *params,
                                                   cl_uint num_wait, const cl_event *wait_list);

/*
 * The all-to-all head split (DeepSpeed Ulysses): ranks hold contiguous chunks of the tokens for
 * every head; an all-to-all gives each rank the whole sequence for Hq/P query heads (and Hkv/P
 * key/value heads), it runs clattn_sdpa on them, and a second all-to-all returns each rank its
 * tokens' outputs. Layout CLATTN_MPI_CONTIGUOUS only; Hq and Hkv multiples of P (else
 * CLATTN_ERROR_HEAD_MISMATCH). Everything clattn_sdpa takes applies unchanged (ALiBi slopes and
 * sinks: every rank's buffers hold all Hq heads). Shapes and types as for the ring; CLATTN_F32.
 */
CLATTN_API clattn_status clattn_mpi_head_split_attention(
    clattn_context *ctx, cl_command_queue queue, MPI_Comm comm, const clattn_tensor *Q,
    const clattn_tensor *K, const clattn_tensor *V, const clattn_tensor *O,
    const clattn_tensor *lse, const clattn_mpi_ring_params *params, cl_uint num_wait,
    const cl_event *wait_list);

typedef struct clattn_mpi_decode_params {
    /* As clattn_kv_cache_attend takes them: scale, splits, soft-capping, sinks (added once,
     * after the reduction), cross. Not taken (CLATTN_ERROR_UNSUPPORTED_PATH): a window or ALiBi,
     * which need the shard's positions; a cache built with RoPE (rotate K at global positions,
     * clattn_rope with positions, before appending); lse, workspace, cu_seqlens (the call's own). */
    clattn_kv_attend_params attend;
    int root;                 /* the rank whose Q is broadcast to the others */
    const clattn_tensor *lse; /* NULL, or [B, Hq, Lq, 1] CLATTN_F32 over all shards */
    clattn_mpi_stats *stats;  /* NULL, or filled in */
    void *reserved[8];        /* must be zero */
} clattn_mpi_decode_params;

CLATTN_API clattn_mpi_decode_params clattn_mpi_decode_params_default(void);

/*
 * Decoding over a KV cache sharded between the ranks: rank r's cache holds, for each sequence,
 * the r-th contiguous shard of its keys and values (any lengths, 0 included); the ranks' caches
 * share B, Hkv, D and dtype; ctx is the context the cache was created with. Root's Q is
 * broadcast (the other ranks' Q give the shape only and are not read), every rank attends its
 * shard (clattn_kv_cache_attend, with log-sum-exp), and the partial (O, lse) rows are
 * all-reduced with an MPI operation that merges them by log-sum-exp; every rank gets O (and
 * lse) over the whole cache, as one cache holding all the keys would give. Causal: Lq = 1, the
 * new token at the newest key, which sees every key of every shard (a chunk of several queries
 * would need each shard's positions: run it with the ring); with attend.cross, any Lq.
 *   Q [B, Hq, Lq, D]   O [B, Hq, Lq, D]   CLATTN_F32
 */
CLATTN_API clattn_status clattn_mpi_kv_attend(clattn_context *ctx, clattn_kv_cache *cache,
                                              cl_command_queue queue, MPI_Comm comm,
                                              const clattn_tensor *Q, const clattn_tensor *O,
                                              const clattn_mpi_decode_params *params,
                                              cl_uint num_wait, const cl_event *wait_list);

#ifdef __cplusplus
}
#endif

#endif
