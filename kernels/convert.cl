/* Copies a strided 4-D view into another of the same dims, between fp16 storage and float or
 * float to float (a transposed copy, for instance): SRC_HALF / DST_HALF 1 read / write half
 * (vload_half, vstore_half rounding to nearest even; core OpenCL, no cl_khr_fp16 needed).
 * NDRange: (d3, d2, d0 * d1). No barriers. */

#ifndef SRC_HALF
#define SRC_HALF 1
#endif
#ifndef DST_HALF
#define DST_HALF 0
#endif

#if SRC_HALF
#define SRC_T half
#define READ(i) vload_half((i), src)
#else
#define SRC_T float
#define READ(i) src[i]
#endif
#if DST_HALF
#define DST_T half
#define WRITE(x, i) vstore_half((x), (i), dst)
#else
#define DST_T float
#define WRITE(x, i) (dst[i] = (x))
#endif

__kernel void convert(VIEW(const SRC_T, src), VIEW(DST_T, dst), ulong d1)
{
    const ulong i3 = get_global_id(0), i2 = get_global_id(1), z = get_global_id(2);
    const ulong i0 = z / d1, i1 = z % d1;
    WRITE(READ(AT(src, i0, i1, i2, i3)), AT(dst, i0, i1, i2, i3));
}
