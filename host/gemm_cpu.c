/* clattn's own matrix products for CPU devices (see gemm_cpu.h and kernels/gemm.cl). */
#include "gemm_cpu.h"

#include "tensor.h"

#include <stdio.h>

/* The register tile for a device's vector width: MR rows x NV vectors of VEC floats, chosen so
 * that the MR x NV accumulators, NV panel vectors and a broadcast fit the register file. */
typedef struct gemm_tile {
    int vec, mr, nv, rb;
} gemm_tile;

static gemm_tile tile_for(const clattn_context *ctx)
{
    const cl_uint w = ctx->native_float_width;
    const clattn_kernel_config *k = &ctx->kernels;
    if (k->gemm_rows) /* an override: params, environment or tune file */
        return (gemm_tile){w >= 16 ? 16 : w >= 8 ? 8 : 4, (int)k->gemm_rows, (int)k->gemm_vectors,
                           (int)k->gemm_blocks};
    if (w >= 16) /* AVX-512: 32 registers of 16 floats; 24 accumulators */
        return (gemm_tile){16, 6, 4, 4};
    if (w >= 8) /* AVX2: 16 registers of 8 floats; 12 accumulators */
        return (gemm_tile){8, 4, 3, 4};
    return (gemm_tile){4, 4, 2, 4}; /* SSE, NEON: 16 registers of 4 floats */
}

static size_t panel_width(const gemm_tile *t)
{
    return (size_t)(t->nv * t->vec);
}

static void options(const gemm_tile *t, bool a_unit, bool half_b, bool bias, bool c_split,
                    char *buf, size_t cap)
{
    snprintf(buf, cap,
             "-DVEC=%d -DMR=%d -DNV=%d -DRB=%d -DA_UNIT=%d -DHALF_B=%d -DHAS_BIAS=%d -DC_SPLIT=%d",
             t->vec, t->mr, t->nv, t->rb, a_unit, half_b, bias, c_split);
}

bool clattn__gemm_cpu_chosen(const clattn_context *ctx)
{
    switch (ctx->kernels.gemm_engine) {
    case CLATTN_GEMM_ENGINE_CLATTN: return true;
    case CLATTN_GEMM_ENGINE_CLBLAST: return false;
    default: return (ctx->info.type & CL_DEVICE_TYPE_CPU) != 0;
    }
}

size_t clattn__gemm_cpu_packed_bytes(const clattn_context *ctx, size_t items, size_t K, size_t N)
{
    const gemm_tile t = tile_for(ctx);
    const size_t NR = panel_width(&t);
    size_t bytes = sizeof(float);
    if (!clattn__mul(bytes, items, &bytes) || !clattn__mul(bytes, (N + NR - 1) / NR * NR, &bytes) ||
        !clattn__mul(bytes, K, &bytes))
        return 0;
    return bytes;
}

static void arg_operand(clattn_kargs *a, const clattn_operand *x)
{
    clattn__arg_ulong(a, x->offset);
    clattn__arg_ulong(a, x->batch_stride[0]);
    clattn__arg_ulong(a, x->batch_stride[1]);
    clattn__arg_ulong(a, x->head_div);
    clattn__arg_ulong(a, x->rs);
    clattn__arg_ulong(a, x->cs);
}

/* B's distinct items over d0 x d1: one per batch item and kv head it varies over. */
static size_t distinct_items(size_t d0, size_t d1, size_t b0, size_t b1, size_t div)
{
    return (b0 ? d0 : 1) * (b1 ? (d1 + div - 1) / div : 1);
}

clattn_status clattn__gemm_cpu_pack_plan(clattn_plan *p, size_t d0, size_t d1,
                                         const clattn_operand *B, bool half,
                                         const clattn_packed *dst)
{
    const gemm_tile t = tile_for(p->ctx);
    char opts[160];
    options(&t, false, half, false, false, opts, sizeof opts);
    clattn_kargs args = {0};
    clattn__arg_mem(&args, B->buffer);
    arg_operand(&args, B);
    clattn__arg_ulong(&args, d1);
    clattn__arg_ulong(&args, dst->K);
    clattn__arg_ulong(&args, dst->N);
    clattn__arg_mem(&args, dst->buffer);
    const size_t NR = panel_width(&t);
    const size_t global[3] = {dst->K, (dst->N + NR - 1) / NR,
                              distinct_items(d0, d1, B->batch_stride[0], B->batch_stride[1],
                                             B->head_div)};
    return clattn__plan_kernel(p, "gemm", opts, "gemm_pack", &args, 3, global, NULL);
}

clattn_status clattn__gemm_cpu_product_plan(clattn_plan *p, size_t d0, size_t d1, float alpha,
                                            const clattn_operand *A, const clattn_packed *B,
                                            const clattn_operand *C, const clattn_tensor *bias,
                                            size_t c_split, size_t c_hs)
{
    const gemm_tile t = tile_for(p->ctx);
    const size_t M = C->rows, N = B->N, K = B->K, NR = panel_width(&t);
    char opts[160];
    options(&t, A->cs == 1 || K == 1, false, bias != NULL, c_split > 0, opts, sizeof opts);
    clattn_kargs args = {0};
    clattn__arg_mem(&args, A->buffer);
    arg_operand(&args, A);
    clattn__arg_mem(&args, B->buffer);
    clattn__arg_ulong(&args, B->b0);
    clattn__arg_ulong(&args, B->b1);
    clattn__arg_ulong(&args, B->div);
    clattn__arg_mem(&args, C->buffer);
    arg_operand(&args, C);
    clattn__arg_ulong(&args, d1);
    clattn__arg_ulong(&args, M);
    clattn__arg_ulong(&args, N);
    clattn__arg_ulong(&args, K);
    clattn__arg_float(&args, alpha);
    clattn__arg_mem(&args, bias ? bias->buffer : NULL);
    clattn__arg_ulong(&args, bias ? bias->offset : 0);
    clattn__arg_ulong(&args, bias ? clattn__stride(bias, 3) : 0);
    clattn__arg_ulong(&args, c_split ? c_split : 1);
    clattn__arg_ulong(&args, c_hs);
    const size_t rows_per_item = (size_t)(t.mr * t.rb);
    const size_t global[3] = {(M + rows_per_item - 1) / rows_per_item, (N + NR - 1) / NR, d0 * d1};
    const size_t local[3] = {1, 1, 1};
    return clattn__plan_kernel(p, "gemm", opts, "gemm_panels", &args, 3, global, local);
}

clattn_status clattn__gemm_cpu_plan(clattn_plan *p, size_t d0, size_t d1, float alpha,
                                    const clattn_operand *A, const clattn_operand *B,
                                    const clattn_operand *C, const clattn_tensor *bias)
{
    clattn_packed packed = {NULL, A->cols, C->cols, B->batch_stride[0], B->batch_stride[1],
                            B->head_div};
    const size_t items = distinct_items(d0, d1, packed.b0, packed.b1, packed.div);
    const size_t bytes = clattn__gemm_cpu_packed_bytes(p->ctx, items, packed.K, packed.N);
    clattn_status st = bytes ? clattn__plan_buffer(p, bytes, &packed.buffer) : CLATTN_ERROR_SIZE_OVERFLOW;
    if (st == CL_SUCCESS)
        st = clattn__gemm_cpu_pack_plan(p, d0, d1, B, false, &packed);
    return st != CL_SUCCESS ? st
                            : clattn__gemm_cpu_product_plan(p, d0, d1, alpha, A, &packed, C, bias,
                                                            0, 0);
}
