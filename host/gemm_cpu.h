/* clattn's own matrix-product kernels (kernels/gemm.cl), for CPU devices: register tiles sized
 * for the vector unit, B packed into panels first. gemm.c's CLBlast path runs everywhere else. */
#ifndef CLATTN_GEMM_CPU_H
#define CLATTN_GEMM_CPU_H
#include "plan.h"

/* Whether products on this context run on clattn's own kernels (the context's override, else
 * the device type). */
bool clattn__gemm_cpu_chosen(const clattn_context *ctx);

/* Appends C = alpha * A * B (+ bias[n], a [1, 1, 1, N] view, or NULL) for d0 x d1 items
 * (operands as in gemm.h, m, n, k > 0): the packing of B's distinct items into a buffer of the
 * plan's, then the product. */
clattn_status clattn__gemm_cpu_plan(clattn_plan *p, size_t d0, size_t d1, float alpha,
                                    const clattn_operand *A, const clattn_operand *B,
                                    const clattn_operand *C, const clattn_tensor *bias);

#endif
