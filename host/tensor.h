/* Tensor-view validation and checked size arithmetic. */
#ifndef CLATTN_TENSOR_H
#define CLATTN_TENSOR_H
#include "context.h"

#include <stdbool.h>
#include <stdint.h>

/* a * b and a + b into *out; false (and *out untouched) on size_t overflow. */
static inline bool clattn__mul(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return false;
    *out = a * b;
    return true;
}
static inline bool clattn__add(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a)
        return false;
    *out = a + b;
    return true;
}

typedef enum clattn_view_role { CLATTN_VIEW_INPUT = 0, CLATTN_VIEW_OUTPUT = 1 } clattn_view_role;

/* Checks one view: present, CLATTN_F32, element count and extent without overflow, buffer from the
 * context and large enough for every element the view reaches; an input's buffer not write-only,
 * an output's not read-only. An output view may not reach one element twice through a stride of 0,
 * nor hold more elements than the span from its first to its last. A view with a dim of 0 is empty and reaches nothing; its
 * buffer may be NULL. */
clattn_status clattn__view_check(const clattn_context *ctx, const clattn_tensor *t,
                                 clattn_view_role role);
/* The same, but CLATTN_F16 passes too (for the calls that can store fp16). */
clattn_status clattn__view_check_f16(const clattn_context *ctx, const clattn_tensor *t,
                                     clattn_view_role role);
/* The same for the dtypes in the mask `dtypes` (CLATTN_DTYPE_BIT of each). A known dtype outside
 * it is CLATTN_ERROR_UNSUPPORTED_DTYPE, an unknown one CLATTN_ERROR_INVALID_ARGUMENT. */
#define CLATTN_DTYPE_BIT(d) ((unsigned)(d) < 16u ? 1u << (unsigned)(d) : 0u)
clattn_status clattn__view_check_dtypes(const clattn_context *ctx, const clattn_tensor *t,
                                        clattn_view_role role, unsigned dtypes);

static inline bool clattn__view_empty(const clattn_tensor *t)
{
    return t->dims[0] == 0 || t->dims[1] == 0 || t->dims[2] == 0 || t->dims[3] == 0;
}

/* CL_MEM_FLAGS of a buffer. */
clattn_status clattn__buffer_flags(cl_mem buf, cl_mem_flags *flags);
/* CLATTN_ERROR_INVALID_ARGUMENT for a CL_MEM_WRITE_ONLY buffer, which kernels may not read (an
 * output the library also reads back: a matrix product's, which CLBlast may read). */
clattn_status clattn__buffer_readable(cl_mem buf);

/* Checks that `buf` belongs to the context and holds at least `bytes` bytes. */
clattn_status clattn__buffer_check(const clattn_context *ctx, cl_mem buf, size_t bytes);
/* A vector of `count` 4-byte elements (float or int32: key lengths, slopes, sinks, positions)
 * from element `offset` of `buf`: inside it, and readable by kernels. */
clattn_status clattn__vector_check(const clattn_context *ctx, cl_mem buf, size_t offset,
                                   size_t count);

/* The view's stride along `dim`, or 0 when the dim has size 1 (any stride reaches the same
 * element): kernels and the GEMM batching then see broadcast and size-1 dims alike. */
static inline size_t clattn__stride(const clattn_tensor *t, int dim)
{
    return t->dims[dim] == 1 ? 0 : t->strides[dim];
}

/* A caller's workspace: `bytes` from byte `offset` (a multiple of 4) of `buffer`, inside it,
 * readable and writable by kernels, and reaching no byte of the call's own views (`views`, NULL
 * entries skipped): the library writes it while the call runs. */
clattn_status clattn__workspace_check(const clattn_context *ctx, cl_mem buffer, size_t offset,
                                      size_t bytes, const clattn_tensor *const *views, size_t n);

/* Whether two (checked) views reach no common byte: different buffers, or byte spans from the
 * first element to the last that do not meet. */
bool clattn__views_apart(const clattn_tensor *a, const clattn_tensor *b);

/* The key lengths of mask params as a view (int32 [batch]; buffer NULL when there are none),
 * for the overlap checks above. */
clattn_tensor clattn__lengths_view(const clattn_mask_params *m, size_t batch);

/* True when dims 0..2 can be walked as one dim of dims[0]*dims[1]*dims[2] rows spaced `*step`
 * apart (so a batched matrix product becomes one). */
bool clattn__view_rows_flat(const clattn_tensor *t, size_t *step);

#endif
