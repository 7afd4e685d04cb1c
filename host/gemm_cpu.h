/* clattn's own matrix-product kernels (kernels/gemm.cl), for CPU devices: register tiles sized
 * for the vector unit, B packed into panels first (once per call, or once for all calls when B
 * is a weight prepared in advance). gemm.c's CLBlast path runs everywhere else. */
#ifndef CLATTN_GEMM_CPU_H
#define CLATTN_GEMM_CPU_H
#include "plan.h"

/* Whether products on this context run on clattn's own kernels (the context's override, else
 * the device type). */
bool clattn__gemm_cpu_chosen(const clattn_context *ctx);

/* B packed into panels: `items` distinct K x N matrices. */
typedef struct clattn_packed {
    cl_mem buffer;
    size_t K, N;
    size_t b0, b1, div; /* how batch items map to packed items: as B's batch strides and divisor */
} clattn_packed;

/* Bytes `items` packed K x N matrices take (0 on overflow). */
size_t clattn__gemm_cpu_packed_bytes(const clattn_context *ctx, size_t items, size_t K, size_t N);

/* Appends the packing of B (K x N, for d0 x d1 items: one copy per distinct item; F32, or F16
 * when `half`) into dst->buffer, which must hold clattn__gemm_cpu_packed_bytes. */
clattn_status clattn__gemm_cpu_pack_plan(clattn_plan *p, size_t d0, size_t d1,
                                         const clattn_operand *B, bool half,
                                         const clattn_packed *dst);

/* Appends C = alpha * A * B (+ bias[n], a [1, 1, 1, N] view, or NULL) for d0 x d1 items, B
 * packed already. c_split > 0: C's columns come in groups of c_split, each c_hs elements after
 * the one before (column n at (n / c_split) * c_hs + (n % c_split) * cs). */
clattn_status clattn__gemm_cpu_product_plan(clattn_plan *p, size_t d0, size_t d1, float alpha,
                                            const clattn_operand *A, const clattn_packed *B,
                                            const clattn_operand *C, const clattn_tensor *bias,
                                            size_t c_split, size_t c_hs);

/* Both: B packed into a buffer of the plan's, then the product (operands as in gemm.h,
 * m, n, k > 0). */
clattn_status clattn__gemm_cpu_plan(clattn_plan *p, size_t d0, size_t d1, float alpha,
                                    const clattn_operand *A, const clattn_operand *B,
                                    const clattn_operand *C, const clattn_tensor *bias);

#endif
