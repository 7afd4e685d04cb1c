/* Sets every element of a strided 4-D view to `value` (zero outputs when there are no keys,
 * -INFINITY log-sum-exp rows). NDRange: (d3, d2, d0 * d1). No barriers. */

__kernel void fill(VIEW(float, x), ulong d1, float value)
{
    const ulong i3 = get_global_id(0);
    const ulong i2 = get_global_id(1);
    const ulong z = get_global_id(2);
    x[AT(x, z / d1, z % d1, i2, i3)] = value;
}
