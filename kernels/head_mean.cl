/* Attention weights averaged over heads (PyTorch need_weights with average_attn_weights):
 * W[b, 0, i, j] = mean over h of P[b, h, i, j]. NDRange: (Lk, Lq, B). No barriers. */

__kernel void head_mean(VIEW(const float, p), ulong H, VIEW(float, w))
{
    const ulong j = get_global_id(0);
    const ulong i = get_global_id(1);
    const ulong b = get_global_id(2);
    float sum = 0.0f;
    for (ulong h = 0; h < H; h++)
        sum += p[AT(p, b, h, i, j)];
    w[AT(w, b, 0, i, j)] = sum / (float)H;
}
