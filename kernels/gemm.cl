/* Matrix products for CPU devices: C = alpha * A * B for a batch of items, the engine behind
 * host/gemm.c where CLBlast's kernels are the limit (PoCL: a work-group loop per work-item, and
 * barriers as loops). Two kernels:
 *
 *   gemm_pack   copies B, any layout, into panels of NR columns: panel p of item zb holds
 *               B(k, p * NR + j) at [zb][p][k][j] (0 past N), so that the product reads each
 *               k's NR columns as two contiguous vectors. NDRange (K, panels, packed items).
 *   gemm_panels one work-item per RB blocks of MR rows x NR columns of C: MR x NV vector
 *               accumulators that stay in registers, B's panel row loaded once per k for all MR
 *               rows, A broadcast from memory, fma(); with HAS_BIAS, bias[n] is added as C is
 *               stored. NDRange (row blocks / RB, panels, items), local (1, 1, 1); consecutive
 *               work-items share a panel, which stays in cache.
 *
 * Items: item z = (i0, i1) of d0 x d1, operand X's matrix at X_off + i0 * X_b0 + (i1 / X_div) *
 * X_b1 (X_div > 1: several items share one, as query heads share a kv head), element (r, c) at
 * r * X_rs + c * X_cs. B is packed per distinct item: (i0 if B_b0, else 0) x (i1 / B_div if
 * B_b1, else 0). With C_SPLIT, C's columns come in groups of c_split, group g c_hs elements after
 * group g - 1 (a projection writing its heads head-major: column n = head n / D, dim n % D).
 * Specialised with VEC, NV (NR = NV * VEC), MR, RB, A_UNIT, HAS_BIAS, C_SPLIT. fp32
 * throughout: both engines multiply as IEEE says (0 * Inf is NaN), like CLBlast. */

#ifndef VEC
#define VEC 16
#endif
#ifndef MR
#define MR 8
#endif
#ifndef RB
#define RB 4 /* blocks of MR rows per work-item */
#endif
#ifndef KU
#define KU 2 /* k steps per loop iteration (2: measured a few percent faster than 1 or 4) */
#endif
#ifndef HALF_B
#define HALF_B 0 /* 1: gemm_pack reads B as fp16 (vload_half), e.g. fp16 weights */
#endif
#ifndef HAS_BIAS
#define HAS_BIAS 0
#endif
#ifndef C_SPLIT
#define C_SPLIT 0
#endif
#ifndef A_UNIT
#define A_UNIT 0 /* 1: A's elements along k are adjacent (a_cs = 1) */
#endif
#ifndef NV
#define NV 2 /* vectors per panel row */
#endif
#define NR (NV * VEC)
#define floatV CAT(float, VEC)
#define LOADV(i, p) CAT(vload, VEC)((i), (p))
#define STOREV(x, i, p) CAT(vstore, VEC)((x), (i), (p))

/* One operand's place in the batch and its strides, as the host passes it. */
#define OPERAND(x) ulong x##_off, ulong x##_b0, ulong x##_b1, ulong x##_div, ulong x##_rs, ulong x##_cs
#define ITEM_BASE(x, i0, i1) ((x##_off) + (i0) * (x##_b0) + ((i1) / (x##_div)) * (x##_b1))

#if HALF_B
#define B_T half
#define B_AT(i) vload_half((i), b)
#else
#define B_T float
#define B_AT(i) b[i]
#endif

__kernel void gemm_pack(__global const B_T *b, OPERAND(b), ulong d1, ulong K, ulong N,
                        __global float *bp)
{
    const ulong k = get_global_id(0), p = get_global_id(1), zb = get_global_id(2);
    const ulong panels = (N + NR - 1) / NR;
    /* Packed item zb stands for (i0, i1 / b_div) = (zb / nb1, zb % nb1). */
    const ulong nb1 = b_b1 ? (d1 + b_div - 1) / b_div : 1;
    const ulong base = b_off + (zb / nb1) * b_b0 + (zb % nb1) * b_b1 + k * b_rs;
    __global float *out = bp + ((zb * panels + p) * K + k) * NR;
    for (int j = 0; j < NR; j++) {
        const ulong n = p * NR + j;
        out[j] = n < N ? B_AT(base + n * b_cs) : 0.0f;
    }
}

__kernel __attribute__((reqd_work_group_size(1, 1, 1)))
void gemm_panels(__global const float *a, OPERAND(a), __global const float *bp, ulong b_b0,
                 ulong b_b1, ulong b_div, __global float *c, OPERAND(c), ulong d1, ulong M,
                 ulong N, ulong K, float alpha, __global const float *bias, ulong bias_off,
                 ulong bias_cs, ulong c_split, ulong c_hs)
{
    const ulong p = get_global_id(1), z = get_global_id(2);
    const ulong i0 = z / d1, i1 = z % d1;
    const ulong panels = (N + NR - 1) / NR;
    const ulong nb1 = b_b1 ? (d1 + b_div - 1) / b_div : 1;
    const ulong zb = (b_b0 ? i0 : 0) * nb1 + (b_b1 ? i1 / b_div : 0);
    const __global float *panel = bp + (zb * panels + p) * K * NR;
    const ulong n0 = p * NR;
#if HAS_BIAS
    /* The bias of this panel's columns, as NV vectors (0 past N). */
    floatV bv0[NV];
    {
        float lanes[NR];
        for (int j = 0; j < NR; j++)
            lanes[j] = n0 + j < N ? bias[bias_off + (n0 + j) * bias_cs] : 0.0f;
        #pragma unroll
        for (int v = 0; v < NV; v++)
            bv0[v] = LOADV(v, lanes);
    }
#define EPILOGUE(r, v) fma(acc[r][v], (floatV)alpha, bv0[v])
#else
    (void)bias, (void)bias_off, (void)bias_cs;
#define EPILOGUE(r, v) (acc[r][v] * alpha)
#endif
#if C_SPLIT
#define C_COL(n) (((n) / c_split) * c_hs + ((n) % c_split) * c_cs)
/* Whether the VEC columns from n are adjacent in C (not across two groups). */
#define C_RUN(n) (c_cs == 1 && (n) % c_split + VEC <= c_split)
#else
    (void)c_split, (void)c_hs;
#define C_COL(n) ((n) * c_cs)
#define C_RUN(n) (c_cs == 1)
#endif
#if A_UNIT
    (void)a_cs;
#define A_AT(r, k) arow[r][k]
#else
#define A_AT(r, k) arow[r][(k) * a_cs]
#endif

    /* RB blocks of MR rows, one after the other, on the same panel (which stays in cache). */
    for (ulong r0 = get_global_id(0) * RB * MR; r0 < min((get_global_id(0) + 1) * RB * MR, M); r0 += MR) {
        /* Rows past M repeat the last row (valid memory) and are not stored. */
        const __global float *arow[MR];
        #pragma unroll
        for (int r = 0; r < MR; r++)
            arow[r] = a + ITEM_BASE(a, i0, i1) + min(r0 + r, M - 1) * a_rs;

        floatV acc[MR][NV];
        #pragma unroll
        for (int r = 0; r < MR; r++)
            #pragma unroll
            for (int v = 0; v < NV; v++)
                acc[r][v] = (floatV)0.0f;
        const __global float *pk = panel;
        ulong k = 0;
        for (; k + KU <= K; k += KU, pk += KU * NR) {
            #pragma unroll
            for (int u = 0; u < KU; u++) {
                floatV bv[NV];
                #pragma unroll
                for (int v = 0; v < NV; v++)
                    bv[v] = LOADV(v, pk + u * NR);
                #pragma unroll
                for (int r = 0; r < MR; r++) {
                    const floatV x = (floatV)A_AT(r, k + u);
                    #pragma unroll
                    for (int v = 0; v < NV; v++)
                        acc[r][v] = fma(x, bv[v], acc[r][v]);
                }
            }
        }
        for (; k < K; k++, pk += NR) {
            floatV bv[NV];
            #pragma unroll
            for (int v = 0; v < NV; v++)
                bv[v] = LOADV(v, pk);
            #pragma unroll
            for (int r = 0; r < MR; r++) {
                const floatV x = (floatV)A_AT(r, k);
                #pragma unroll
                for (int v = 0; v < NV; v++)
                    acc[r][v] = fma(x, bv[v], acc[r][v]);
            }
        }

        for (int r = 0; r < MR && r0 + r < M; r++) {
            __global float *crow = c + ITEM_BASE(c, i0, i1) + (r0 + r) * c_rs;
            #pragma unroll
            for (int v = 0; v < NV; v++) {
                const ulong n = n0 + v * VEC;
                if (n + VEC <= N && C_RUN(n)) {
                    STOREV(EPILOGUE(r, v), 0, crow + C_COL(n));
                } else {
                    float lanes[VEC];
                    STOREV(EPILOGUE(r, v), 0, lanes);
                    for (int j = 0; j < VEC && n + j < N; j++)
                        crow[C_COL(n + j)] = lanes[j];
                }
            }
        }
    }
}
