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

__kernel void convert(VIEW(const SRC_T, src), VIEW(DST_T, dst), ulong d1)
{
    const ulong i3 = get_global_id(0), i2 = get_global_id(1), z = get_global_id(2);
    const ulong i0 = z / d1, i1 = z % d1;
    const ulong s = AT(src, i0, i1, i2, i3);
    const ulong d = AT(dst, i0, i1, i2, i3);
#if TO_HALF
    vstore_half(src[s], d, dst);
#else
    dst[d] = vload_half(s, src);
#endif
}
