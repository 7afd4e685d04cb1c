/* Bias add for the projection step: Y[i0, i1, m, n] += bias[n].
 * NDRange: (N, M, d0 * d1). Offsets and strides in elements. No barriers. */

__kernel void bias_add(__global float *y, ulong y_off, ulong ys0, ulong ys1, ulong ys2, ulong ys3,
                       ulong d1, __global const float *bias, ulong b_off, ulong bs)
{
    const ulong n = get_global_id(0);
    const ulong m = get_global_id(1);
    const ulong z = get_global_id(2);
    const ulong i0 = z / d1, i1 = z % d1;
    y[y_off + i0 * ys0 + i1 * ys1 + m * ys2 + n * ys3] += bias[b_off + n * bs];
}
