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
    if (w >= 16) /* AVX-512: 32 registers of 16 floats; 24 accumulators */
        return (gemm_tile){16, 6, 4, 4};
    if (w >= 8) /* AVX2: 16 registers of 8 floats; 12 accumulators */
        return (gemm_tile){8, 4, 3, 4};
    return (gemm_tile){4, 4, 2, 4}; /* SSE, NEON: 16 registers of 4 floats */
}

bool clattn__gemm_cpu_chosen(const clattn_context *ctx)
{
    switch (ctx->kernels.gemm_engine) {
    case CLATTN_GEMM_ENGINE_CLATTN: return true;
    case CLATTN_GEMM_ENGINE_CLBLAST: return false;
    default: return (ctx->info.type & CL_DEVICE_TYPE_CPU) != 0;
    }
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

clattn_status clattn__gemm_cpu_plan(clattn_plan *p, size_t d0, size_t d1, float alpha,
                                    const clattn_operand *A, const clattn_operand *B,
                                    const clattn_operand *C, const clattn_tensor *bias)
{
    const gemm_tile t = tile_for(p->ctx);
    const size_t M = C->rows, N = C->cols, K = A->cols, NR = (size_t)(t.nv * t.vec);
    const size_t panels = (N + NR - 1) / NR;
    /* B's distinct items: one per batch item and kv head it varies over. */
    const size_t nb0 = B->batch_stride[0] ? d0 : 1;
    const size_t nb1 = B->batch_stride[1] ? (d1 + B->head_div - 1) / B->head_div : 1;
    size_t bytes = sizeof(float);
    if (!clattn__mul(bytes, nb0 * nb1, &bytes) || !clattn__mul(bytes, panels * NR, &bytes) ||
        !clattn__mul(bytes, K, &bytes))
        return CLATTN_ERROR_SIZE_OVERFLOW;
    cl_mem packed;
    clattn_status st = clattn__plan_buffer(p, bytes, &packed);
    if (st != CL_SUCCESS)
        return st;
    char opts[96];
    snprintf(opts, sizeof opts, "-DVEC=%d -DMR=%d -DNV=%d -DRB=%d -DA_UNIT=%d -DHAS_BIAS=%d", t.vec,
             t.mr, t.nv, t.rb, A->cs == 1 || K == 1, bias != NULL);

    clattn_kargs pack = {0};
    clattn__arg_mem(&pack, B->buffer);
    arg_operand(&pack, B);
    clattn__arg_ulong(&pack, d1);
    clattn__arg_ulong(&pack, K);
    clattn__arg_ulong(&pack, N);
    clattn__arg_mem(&pack, packed);
    const size_t pack_global[3] = {K, panels, nb0 * nb1};
    if ((st = clattn__plan_kernel(p, "gemm", opts, "gemm_pack", &pack, 3, pack_global, NULL)) != CL_SUCCESS)
        return st;

    clattn_kargs prod = {0};
    clattn__arg_mem(&prod, A->buffer);
    arg_operand(&prod, A);
    clattn__arg_mem(&prod, packed);
    clattn__arg_ulong(&prod, B->batch_stride[0]);
    clattn__arg_ulong(&prod, B->batch_stride[1]);
    clattn__arg_ulong(&prod, B->head_div);
    clattn__arg_mem(&prod, C->buffer);
    arg_operand(&prod, C);
    clattn__arg_ulong(&prod, d1);
    clattn__arg_ulong(&prod, M);
    clattn__arg_ulong(&prod, N);
    clattn__arg_ulong(&prod, K);
    clattn__arg_float(&prod, alpha);
    clattn__arg_mem(&prod, bias ? bias->buffer : NULL);
    clattn__arg_ulong(&prod, bias ? bias->offset : 0);
    clattn__arg_ulong(&prod, bias ? clattn__stride(bias, 3) : 0);
    const size_t rows_per_item = (size_t)(t.mr * t.rb);
    const size_t global[3] = {(M + rows_per_item - 1) / rows_per_item, panels, d0 * d1};
    const size_t local[3] = {1, 1, 1};
    return clattn__plan_kernel(p, "gemm", opts, "gemm_panels", &prod, 3, global, local);
}
