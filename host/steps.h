/* The operations as internal planning functions, so that composite operations (sdpa, the
 * multi-head block, the KV cache) validate and prepare every step before enqueuing the first.
 *
 * A *_plan function validates its arguments and appends what it will run to the plan (see
 * plan.h); it enqueues nothing. On failure the plan may hold steps already appended: the caller
 * releases the plan without enqueuing it. */
#ifndef CLATTN_STEPS_H
#define CLATTN_STEPS_H
#include "plan.h"

#include <stdbool.h>

/* product.c: C = alpha * A * B (+ bias[n], a [1, 1, 1, N] view, or NULL) for d0 x d1 items
 * (operands as in gemm.h): clattn's own kernel on CPU devices, CLBlast's elsewhere. */
clattn_status clattn__product_plan(clattn_plan *p, size_t d0, size_t d1, float alpha,
                                   const clattn_operand *A, const clattn_operand *B,
                                   const clattn_operand *C, const clattn_tensor *bias);
/* The same with B = Wᵀ of prepared weights (weights.h), in the engine they were prepared for. */
clattn_status clattn__product_weights_plan(clattn_plan *p, size_t d0, size_t d1,
                                           const clattn_operand *A, const clattn_weights *w,
                                           const clattn_operand *C, const clattn_tensor *bias);

/* The projection of a multi-head layer's input X [B, 1, T, K] with weights prepared in panels
 * (clattn's own engine), written head-major into Yh [B, heads, T, D] (N = heads * D): the
 * attention then reads each head's rows contiguous. */
clattn_status clattn__linear_heads_plan(clattn_plan *p, const clattn_tensor *X,
                                        const clattn_weights *w, const clattn_tensor *bias,
                                        const clattn_tensor *Yh);
/* W: a [1, 1, N, K] view, or (Wp non-NULL, W NULL) prepared weights. */
clattn_status clattn__linear_plan(clattn_plan *p, const clattn_tensor *X, const clattn_tensor *W,
                                  const clattn_weights *Wp, const clattn_tensor *bias,
                                  const clattn_tensor *Y);

/* logits.c: soft-capping, ALiBi and sinks (clattn_logit_params) for `heads` query heads, and the
 * sliding window's sides, checked; CLATTN_ERROR_INVALID_ARGUMENT for a bad value. */
clattn_status clattn__logits_check(const clattn_context *ctx, const clattn_logit_params *lp,
                                   size_t heads);
clattn_status clattn__window_check(int64_t left, int64_t right);
/* Whether mask params have a window (either side bounded; window_keep_first alone does
 * nothing). */
bool clattn__window_on(const clattn_mask_params *m);
/* Kernel arguments, as the prelude's rules read them: the window's left and right sides, the
 * kept first keys and the query offset (four longs); the cap times `unit` (log2(e) for kernels
 * that keep scores in base 2) and its inverse (two floats); a float vector (buffer, offset; NULL
 * and 0 for none). */
void clattn__arg_window(clattn_kargs *a, const clattn_mask_params *m);
/* The largest |clattn_mask_params.query_offset|: far below the 2^40 that stands for an
 * unbounded window side, so that an offset never closes an open side. */
#define CLATTN__QUERY_OFFSET_MAX ((ptrdiff_t)1 << 38)
void clattn__arg_softcap(clattn_kargs *a, const clattn_logit_params *lp, float unit);
void clattn__arg_vector(clattn_kargs *a, cl_mem buf, size_t offset);
/* A float [count] vector as a view, for the workspace overlap checks. */
clattn_tensor clattn__vector_view(cl_mem buf, size_t offset, size_t count);

/* rope.c: RoPE params checked for head dim `head_dim` and `batch` sequences, their rotary dim
 * into *rotary; and its values as kernel arguments (ROPE_PARAMS in the prelude; r NULL: none). */
clattn_status clattn__rope_check(const clattn_context *ctx, const clattn_rope_params *r,
                                 size_t head_dim, size_t batch, size_t *rotary);
void clattn__arg_rope(clattn_kargs *a, const clattn_rope_params *r, size_t rotary);

clattn_status clattn__scores_plan(clattn_plan *p, const clattn_tensor *Q, const clattn_tensor *K,
                                  const clattn_tensor *S, float scale);

/* Checks mask params against scores of dims `sdims` = [B, H, Lq, Lk]. */
clattn_status clattn__mask_validate(const clattn_context *ctx, const size_t sdims[4],
                                    const clattn_mask_params *m);
/* Masks S in place (clattn_mask), after soft-capping it and before adding ALiBi's bias when lp
 * (checked by the caller; NULL for none) asks for them. */
clattn_status clattn__mask_plan(clattn_plan *p, const clattn_tensor *S, const clattn_mask_params *m,
                                const clattn_logit_params *lp);

/* sinks: float [H] from element sinks_offset, or NULL (checked by the caller). */
clattn_status clattn__softmax_plan(clattn_plan *p, const clattn_tensor *S, const clattn_tensor *P,
                                   const clattn_tensor *lse, cl_mem sinks, size_t sinks_offset);

clattn_status clattn__weighted_sum_plan(clattn_plan *p, const clattn_tensor *P,
                                        const clattn_tensor *V, const clattn_tensor *O);

/* fill.c: sets a (checked, non-empty) F32 view to `value`; copies `src` into `dst` (same dims;
 * each CLATTN_F16 or CLATTN_F32, not both F16). */
clattn_status clattn__fill_plan(clattn_plan *p, const clattn_tensor *t, float value);
clattn_status clattn__convert_plan(clattn_plan *p, const clattn_tensor *src, const clattn_tensor *dst);

/* merge.c: `parts` partial results [B, H, Lq, Dv] (and their lse [B, H, Lq, 1]) in one buffer,
 * part s at s * o_split (s * l_split) elements past `part` (`part_lse`), merged into O and lse
 * (NULL for none) in one launch; sinks (float [H], or NULL) join the merged denominator. */
clattn_status clattn__merge_parts_plan(clattn_plan *p, const clattn_tensor *part,
                                       const clattn_tensor *part_lse, size_t parts, size_t o_split,
                                       size_t l_split, const clattn_tensor *O,
                                       const clattn_tensor *lse, cl_mem sinks,
                                       size_t sinks_offset);

/* flash.c: the fused path. Split keys (flash-decoding): `count` splits of `keys` keys each (a
 * multiple of the kernel's block, clattn__flash_block_k), split s writing its partial O and lse
 * `o_stride` / `lse_stride` elements after split s - 1's. NULL: one pass over all keys. */
typedef struct clattn_flash_split {
    size_t keys, count, o_stride, lse_stride;
} clattn_flash_split;
/* Paged K and V (a paged KV cache): K and V are the pool's views [pages, Hkv, page_size, D];
 * sequence b's key j is row j % page_size of page table[offset + b * stride + j / page_size]
 * (int32, every entry checked to lie in the pool), and `keys` stands for K's length (the most a
 * sequence may hold; key lengths give each sequence's). */
typedef struct clattn_flash_pages {
    cl_mem table;
    size_t offset, stride, page_size, keys;
} clattn_flash_pages;
/* Whether the fused kernel takes these head dims and dtype on this device (UNSUPPORTED_PATH
 * when not); nothing is built. */
clattn_status clattn__flash_supports(const clattn_context *ctx, size_t D, size_t Dv,
                                     clattn_dtype dtype);
/* A storage format as flash_attention.cl and kv_append.cl take it (-DKV_FMT, -DC_FMT; prelude:
 * FMT_*): 0 float, 1 half, 2 bfloat16, 3 int8 rows. */
int clattn__kv_format(clattn_dtype dtype);
/* Bytes of one stored row of n values (int8 rows carry their scale). */
size_t clattn__kv_row_bytes(clattn_dtype dtype, size_t n);
/* The offsets of a packed batch (cu_seqlens): num + 1 values from 0, never decreasing, ending
 * at `total`. */
bool clattn__offsets_valid(const size_t *cu, size_t num, size_t total);
/* Keys per block of the kernel these dims get on this context. */
size_t clattn__flash_block_k(const clattn_context *ctx, size_t D, size_t Dv);
/* Validates what the fused kernel needs beyond sdpa's own checks, and appends its launch. An
 * error from clattn__flash_rules_out means the unfused path may run the call instead. rope
 * (checked; NULL for none): the queries are rotated at their positions among the keys
 * (query_pos), as the KV cache's attention needs. keys_batched, with params->cu_seqlens_q: the
 * queries are packed but K and V hold one batch item per sequence (a KV cache's mixed steps).
 * pages: K and V paged (NULL: not). */
clattn_status clattn__flash_plan(clattn_plan *p, const clattn_tensor *Q, const clattn_tensor *K,
                                 const clattn_tensor *V, const clattn_tensor *O,
                                 const clattn_sdpa_params *params, const clattn_flash_split *split,
                                 const clattn_rope_params *rope, bool keys_batched,
                                 const clattn_flash_pages *pages);
/* Whether a status from clattn__flash_plan is a fact about the call and the device (its shape,
 * layout, dtype, what the kernel builds to), as opposed to a resource or runtime failure: only
 * such facts let an automatic choice take another path. */
bool clattn__flash_rules_out(clattn_status st);

/* sdpa.c: validates an sdpa call's arguments against each other. */
clattn_status clattn__sdpa_check(const clattn_context *ctx, const clattn_tensor *Q,
                                 const clattn_tensor *K, const clattn_tensor *V,
                                 const clattn_tensor *O, const clattn_sdpa_params *p);
/* Validates (as clattn__sdpa_check) and appends the call's steps; the unfused path's score
 * matrix goes to params->probs, params->workspace, or a buffer of the plan's. */
clattn_status clattn__sdpa_plan(clattn_plan *p, const clattn_tensor *Q, const clattn_tensor *K,
                                const clattn_tensor *V, const clattn_tensor *O,
                                const clattn_sdpa_params *params);
/* Bytes of score matrix an sdpa call with these (checked) arguments needs: 0 on the fused path
 * or when probs hold the scores. May build the fused kernel to choose the path. */
clattn_status clattn__sdpa_workspace(clattn_context *ctx, const clattn_tensor *Q,
                                     const clattn_tensor *K, const clattn_tensor *V,
                                     const clattn_tensor *O, const clattn_sdpa_params *params,
                                     size_t *bytes);

#endif
