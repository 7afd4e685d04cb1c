/* Copies a strided 4-D view between fp16 storage and float: TO_HALF 0 reads half (vload_half)
 * and writes float, 1 reads float and writes half (vstore_half, round to nearest even). Core
 * OpenCL: no cl_khr_fp16 needed. NDRange: (d3, d2, d0 * d1). No barriers. */

#ifndef TO_HALF
#define TO_HALF 0
#endif

#if TO_HALF
#define SRC_T float
#define DST_T half
#else
#define SRC_T half
#define DST_T float
#endif

__kernel void convert(__global const SRC_T *src, ulong s_off, ulong ss0, ulong ss1, ulong ss2,
                      ulong ss3, __global DST_T *dst, ulong d_off, ulong ds0, ulong ds1,
                      ulong ds2, ulong ds3, ulong d1)
{
    const ulong i3 = get_global_id(0), i2 = get_global_id(1), z = get_global_id(2);
    const ulong i0 = z / d1, i1 = z % d1;
    const ulong s = s_off + i0 * ss0 + i1 * ss1 + i2 * ss2 + i3 * ss3;
    const ulong d = d_off + i0 * ds0 + i1 * ds1 + i2 * ds2 + i3 * ds3;
#if TO_HALF
    vstore_half(src[s], d, dst);
#else
    dst[d] = vload_half(s, src);
#endif
}
