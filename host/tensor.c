/* View validation: shapes, strides, checked size arithmetic, buffer bounds. */
#include "tensor.h"

size_t clattn_dtype_size(clattn_dtype dtype)
{
    switch (dtype) {
    case CLATTN_F32: return 4;
    case CLATTN_F16: return 2;
    case CLATTN_BF16: return 2;
    case CLATTN_Q8: return 1;
    }
    return 0;
}

clattn_status clattn__buffer_check(const clattn_context *ctx, cl_mem buf, size_t bytes)
{
    if (!buf)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    cl_context owner = NULL;
    size_t size = 0;
    cl_int err = clGetMemObjectInfo(buf, CL_MEM_CONTEXT, sizeof owner, &owner, NULL);
    if (err == CL_SUCCESS)
        err = clGetMemObjectInfo(buf, CL_MEM_SIZE, sizeof size, &size, NULL);
    if (err != CL_SUCCESS)
        return err;
    if (owner != ctx->context)
        return CLATTN_ERROR_CONTEXT_MISMATCH;
    return bytes <= size ? CL_SUCCESS : CLATTN_ERROR_VIEW_OUT_OF_BOUNDS;
}

clattn_status clattn__vector_check(const clattn_context *ctx, cl_mem buf, size_t offset,
                                   size_t count)
{
    size_t bytes;
    if (!clattn__add(offset, count, &bytes) || !clattn__mul(bytes, 4, &bytes))
        return CLATTN_ERROR_SIZE_OVERFLOW;
    clattn_status st = clattn__buffer_check(ctx, buf, bytes);
    return st != CL_SUCCESS ? st : clattn__buffer_readable(buf);
}

clattn_status clattn__buffer_flags(cl_mem buf, cl_mem_flags *flags)
{
    return clGetMemObjectInfo(buf, CL_MEM_FLAGS, sizeof *flags, flags, NULL);
}

static clattn_status check(const clattn_context *ctx, const clattn_tensor *t,
                           clattn_view_role role, unsigned dtypes)
{
    if (!t)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (!(dtypes & CLATTN_DTYPE_BIT(t->dtype))) /* a dtype this call does not take, or none */
        return clattn_dtype_size(t->dtype) ? CLATTN_ERROR_UNSUPPORTED_DTYPE
                                           : CLATTN_ERROR_INVALID_ARGUMENT;
    size_t count = 1;
    for (int d = 0; d < 4; d++)
        if (!clattn__mul(count, t->dims[d], &count))
            return CLATTN_ERROR_SIZE_OVERFLOW;
    if (count == 0) /* reaches nothing; a handle given anyway must still be ours */
        return t->buffer ? clattn__buffer_check(ctx, t->buffer, 0) : CL_SUCCESS;

    /* Last element reached = offset + sum((dims - 1) * strides). */
    size_t last = t->offset;
    for (int d = 0; d < 4; d++) {
        size_t step;
        if (!clattn__mul(t->dims[d] - 1, t->strides[d], &step) || !clattn__add(last, step, &last))
            return CLATTN_ERROR_SIZE_OVERFLOW;
        if (role == CLATTN_VIEW_OUTPUT && t->dims[d] > 1 && t->strides[d] == 0)
            return CLATTN_ERROR_INVALID_STRIDE;
    }
    size_t bytes;
    if (!clattn__add(last, 1, &bytes) || !clattn__mul(bytes, clattn_dtype_size(t->dtype), &bytes))
        return CLATTN_ERROR_SIZE_OVERFLOW;
    /* More elements than the span they lie in: some are the same element. */
    if (role == CLATTN_VIEW_OUTPUT && count > last - t->offset + 1)
        return CLATTN_ERROR_INVALID_STRIDE;
    clattn_status st = clattn__buffer_check(ctx, t->buffer, bytes);
    cl_mem_flags flags = 0;
    if (st == CL_SUCCESS)
        st = clattn__buffer_flags(t->buffer, &flags);
    /* Kernels may not write a read-only buffer, nor read a write-only one. */
    if (st == CL_SUCCESS && (flags & (role == CLATTN_VIEW_OUTPUT ? CL_MEM_READ_ONLY : CL_MEM_WRITE_ONLY)))
        st = CLATTN_ERROR_INVALID_ARGUMENT;
    return st;
}

clattn_status clattn__buffer_readable(cl_mem buf)
{
    cl_mem_flags flags = 0;
    clattn_status st = clattn__buffer_flags(buf, &flags);
    return st == CL_SUCCESS && (flags & CL_MEM_WRITE_ONLY) ? CLATTN_ERROR_INVALID_ARGUMENT : st;
}

clattn_status clattn__view_check(const clattn_context *ctx, const clattn_tensor *t,
                                 clattn_view_role role)
{
    return check(ctx, t, role, CLATTN_DTYPE_BIT(CLATTN_F32));
}

clattn_status clattn__view_check_f16(const clattn_context *ctx, const clattn_tensor *t,
                                     clattn_view_role role)
{
    return check(ctx, t, role, CLATTN_DTYPE_BIT(CLATTN_F32) | CLATTN_DTYPE_BIT(CLATTN_F16));
}

clattn_status clattn__view_check_dtypes(const clattn_context *ctx, const clattn_tensor *t,
                                        clattn_view_role role, unsigned dtypes)
{
    return check(ctx, t, role, dtypes);
}

bool clattn__view_rows_flat(const clattn_tensor *t, size_t *step)
{
    /* Walk dims 2, 1, 0: each must continue the run of rows the inner ones formed. */
    size_t s = clattn__stride(t, 2);
    size_t rows = t->dims[2];
    for (int d = 1; d >= 0; d--) {
        if (t->dims[d] == 1)
            continue;
        if (rows == 1) {
            s = t->strides[d];
        } else if (t->strides[d] != rows * s) {
            return false;
        }
        rows *= t->dims[d];
    }
    *step = s;
    return true;
}

/* The bytes [begin, end) a checked, non-empty view spans in its buffer. */
static void byte_span(const clattn_tensor *t, size_t *begin, size_t *end)
{
    size_t last = t->offset;
    for (int d = 0; d < 4; d++)
        last += (t->dims[d] - 1) * t->strides[d];
    *begin = t->offset * clattn_dtype_size(t->dtype);
    *end = (last + 1) * clattn_dtype_size(t->dtype);
}

clattn_status clattn__workspace_check(const clattn_context *ctx, cl_mem buffer, size_t offset,
                                      size_t bytes, const clattn_tensor *const *views, size_t n)
{
    size_t end;
    if (offset % sizeof(float) != 0)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (!clattn__add(offset, bytes, &end))
        return CLATTN_ERROR_SIZE_OVERFLOW;
    clattn_status st = clattn__buffer_check(ctx, buffer, end);
    if (st == CLATTN_ERROR_VIEW_OUT_OF_BOUNDS)
        return CLATTN_ERROR_WORKSPACE_TOO_SMALL;
    cl_mem_flags flags = 0;
    if (st == CL_SUCCESS && (st = clattn__buffer_flags(buffer, &flags)) == CL_SUCCESS &&
        (flags & (CL_MEM_READ_ONLY | CL_MEM_WRITE_ONLY)))
        return CLATTN_ERROR_INVALID_ARGUMENT; /* the library both writes and reads it */
    for (size_t i = 0; st == CL_SUCCESS && i < n; i++) {
        const clattn_tensor *t = views[i];
        if (!t || t->buffer != buffer || clattn__view_empty(t) || bytes == 0)
            continue;
        size_t b, e;
        byte_span(t, &b, &e);
        if (b < end && offset < e)
            st = CLATTN_ERROR_INVALID_ARGUMENT; /* the call would overwrite its own operand */
    }
    return st;
}

bool clattn__views_apart(const clattn_tensor *a, const clattn_tensor *b)
{
    if (a->buffer != b->buffer || clattn__view_empty(a) || clattn__view_empty(b))
        return true;
    size_t ab, ae, bb, be;
    byte_span(a, &ab, &ae);
    byte_span(b, &bb, &be);
    return ae <= bb || be <= ab;
}

clattn_tensor clattn__lengths_view(const clattn_mask_params *m, size_t batch)
{
    /* int32 like float: 4 bytes an element */
    const clattn_tensor t = {m->key_lengths, m->key_lengths_offset, CLATTN_F32, {1, 1, 1, batch},
                             {batch, batch, batch, 1}};
    return t;
}
