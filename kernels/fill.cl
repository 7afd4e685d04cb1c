/* Sets every element of a strided 4-D view to `value` (zero outputs when there are no keys,
 * -INFINITY log-sum-exp rows). NDRange: (d3, d2, d0 * d1). No barriers. */

__kernel void fill(__global float *x, ulong off, ulong s0, ulong s1, ulong s2, ulong s3, ulong d1,
                   float value)
{
    const ulong i3 = get_global_id(0);
    const ulong i2 = get_global_id(1);
    const ulong z = get_global_id(2);
    const ulong i0 = z / d1, i1 = z % d1;
    x[off + i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3] = value;
}
