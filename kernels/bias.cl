/* Bias add for the projection step: Y[i0, i1, m, n] += bias[n] (bias a [1, 1, 1, N] view).
 * NDRange: (N, M, d0 * d1). No barriers. */

__kernel void bias_add(VIEW(float, y), ulong d1, VIEW(const float, bias))
{
    const ulong n = get_global_id(0);
    const ulong m = get_global_id(1);
    const ulong z = get_global_id(2);
    y[AT(y, z / d1, z % d1, m, n)] += bias[AT(bias, 0, 0, 0, n)];
}
