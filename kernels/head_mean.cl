/* Attention weights averaged over heads (PyTorch need_weights with average_attn_weights):
 * W[b, 0, i, j] = mean over h of P[b, h, i, j]. NDRange: (Lk, Lq, B). No barriers. */

__kernel void head_mean(__global const float *p, ulong p_off, ulong ps0, ulong ps1, ulong ps2,
                        ulong ps3, ulong H, __global float *w, ulong w_off, ulong ws0, ulong ws2,
                        ulong ws3)
{
    const ulong j = get_global_id(0);
    const ulong i = get_global_id(1);
    const ulong b = get_global_id(2);
    const ulong base = p_off + b * ps0 + i * ps2 + j * ps3;
    float sum = 0.0f;
    for (ulong h = 0; h < H; h++)
        sum += p[base + h * ps1];
    w[w_off + b * ws0 + i * ws2 + j * ws3] = sum / (float)H;
}
