/* The double-precision reference (see ref.h). Plain loops: clarity over speed. */
#include "ref.h"

#include <math.h>
#include <string.h>
#include <stdlib.h>

void ref_linear(size_t rows, size_t K, size_t N, const double *X, const double *W, const double *b,
                double *Y)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t n = 0; n < N; n++) {
            double acc = b ? b[n] : 0.0;
            for (size_t k = 0; k < K; k++)
                acc += X[r * K + k] * W[n * K + k];
            Y[r * N + n] = acc;
        }
}

void ref_scores(size_t B, size_t Hq, size_t Hkv, size_t Lq, size_t Lk, size_t D, double scale,
                const double *Q, const double *K, double *S)
{
    const size_t g = Hq / Hkv;
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < Hq; h++)
            for (size_t i = 0; i < Lq; i++)
                for (size_t j = 0; j < Lk; j++) {
                    const double *q = Q + ((b * Hq + h) * Lq + i) * D;
                    const double *k = K + ((b * Hkv + h / g) * Lk + j) * D;
                    double acc = 0.0;
                    for (size_t d = 0; d < D; d++)
                        acc += q[d] * k[d];
                    S[((b * Hq + h) * Lq + i) * Lk + j] = scale * acc;
                }
}

int ref_hidden(int causal, const int *lengths, size_t b, size_t i, size_t j, size_t Lq, size_t Lk)
{
    long lk = (long)Lk;
    if (lengths) {
        lk = lengths[b] < 0 ? 0 : lengths[b] > (long)Lk ? (long)Lk : lengths[b];
        if ((long)j >= lk)
            return 1;
    }
    if (causal == 1)
        return j > i;
    if (causal == 2)
        return (long)j > (long)i + lk - (long)Lq;
    return 0;
}

void ref_mask(size_t B, size_t H, size_t Lq, size_t Lk, int causal, const double *mask,
              const int *lengths, double *S)
{
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < H; h++)
            for (size_t i = 0; i < Lq; i++)
                for (size_t j = 0; j < Lk; j++) {
                    size_t at = ((b * H + h) * Lq + i) * Lk + j;
                    if (ref_hidden(causal, lengths, b, i, j, Lq, Lk) || (mask && mask[at] == -INFINITY))
                        S[at] = -INFINITY;
                    else if (mask)
                        S[at] += mask[at];
                }
}

void ref_softmax(size_t rows, size_t Lk, const double *S, double *P, double *lse)
{
    for (size_t r = 0; r < rows; r++) {
        const double *s = S + r * Lk;
        int has_nan = 0;
        for (size_t j = 0; j < Lk; j++)
            has_nan |= isnan(s[j]);
        if (has_nan) { /* NaN propagates to the whole row it touches */
            for (size_t j = 0; j < Lk; j++)
                P[r * Lk + j] = NAN;
            if (lse)
                lse[r] = NAN;
            continue;
        }
        double mx = -INFINITY;
        for (size_t j = 0; j < Lk; j++)
            if (s[j] > mx)
                mx = s[j];
        if (mx == -INFINITY) {
            for (size_t j = 0; j < Lk; j++)
                P[r * Lk + j] = 0.0;
            if (lse)
                lse[r] = -INFINITY;
            continue;
        }
        double sum = 0.0;
        for (size_t j = 0; j < Lk; j++)
            sum += exp(s[j] - mx);
        for (size_t j = 0; j < Lk; j++)
            P[r * Lk + j] = exp(s[j] - mx) / sum;
        if (lse)
            lse[r] = mx + log(sum);
    }
}

void ref_weighted_sum(size_t B, size_t Hq, size_t Hkv, size_t Lq, size_t Lk, size_t Dv,
                      const double *P, const double *V, double *O)
{
    const size_t g = Hq / Hkv;
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < Hq; h++)
            for (size_t i = 0; i < Lq; i++)
                for (size_t d = 0; d < Dv; d++) {
                    double acc = 0.0;
                    for (size_t j = 0; j < Lk; j++)
                        acc += P[((b * Hq + h) * Lq + i) * Lk + j] *
                               V[((b * Hkv + h / g) * Lk + j) * Dv + d];
                    O[((b * Hq + h) * Lq + i) * Dv + d] = acc;
                }
}

void ref_sdpa(size_t B, size_t Hq, size_t Hkv, size_t Lq, size_t Lk, size_t D, size_t Dv,
              double scale, int causal, const double *mask, const int *lengths, const double *Q,
              const double *K, const double *V, double *O, double *P, double *lse)
{
    size_t n = B * Hq * Lq * Lk;
    double *S = malloc((n ? n : 1) * sizeof *S);
    double *Pw = P ? P : malloc((n ? n : 1) * sizeof *Pw);
    ref_scores(B, Hq, Hkv, Lq, Lk, D, scale, Q, K, S);
    ref_mask(B, Hq, Lq, Lk, causal, mask, lengths, S);
    ref_softmax(B * Hq * Lq, Lk, S, Pw, lse);
    ref_weighted_sum(B, Hq, Hkv, Lq, Lk, Dv, Pw, V, O);
    if (!P)
        free(Pw);
    free(S);
}

ref_variant ref_variant_none(void)
{
    ref_variant v = {-1, -1, 0, 0.0, NULL, NULL, 0};
    return v;
}

void ref_alibi_slopes(size_t heads, double *slopes)
{
    /* m_h = start^(h+1) with start = 2^(-8/n) for n a power of two; other head counts take the
     * closest power of two below, then every other slope of twice that many. */
    size_t p2 = 1;
    while (p2 * 2 <= heads)
        p2 *= 2;
    const double start = pow(2.0, -8.0 / (double)p2);
    for (size_t h = 0; h < p2 && h < heads; h++)
        slopes[h] = pow(start, (double)(h + 1));
    const double start2 = pow(2.0, -8.0 / (double)(2 * p2));
    for (size_t h = p2, k = 1; h < heads; h++, k += 2)
        slopes[h] = pow(start2, (double)k);
}

void ref_sdpa_variant(size_t B, size_t Hq, size_t Hkv, size_t Lq, size_t Lk, size_t D, size_t Dv,
                      double scale, int causal, const double *mask, const int *lengths,
                      const ref_variant *var, const double *Q, const double *K, const double *V,
                      double *O, double *P, double *lse)
{
    const size_t g = Hq / Hkv;
    double *s = malloc((Lk ? Lk : 1) * sizeof *s);
    for (size_t b = 0; b < B; b++) {
        long lk = (long)Lk;
        if (lengths)
            lk = lengths[b] < 0 ? 0 : lengths[b] > (long)Lk ? (long)Lk : lengths[b];
        for (size_t h = 0; h < Hq; h++)
            for (size_t i = 0; i < Lq; i++) {
                /* where the query stands among the keys */
                const long pos =
                    (causal == 1 ? (long)i : (long)i + lk - (long)Lq) + var->query_offset;
                const size_t row = (b * Hq + h) * Lq + i;
                int has_nan = 0;
                double mx = -INFINITY;
                for (size_t j = 0; j < Lk; j++) {
                    const long jj = (long)j;
                    int hidden = jj >= lk || (causal && jj > pos);
                    if (var->window_left >= 0 && jj < pos - var->window_left &&
                        j >= var->keep_first)
                        hidden = 1;
                    if (var->window_right >= 0 && jj > pos + var->window_right)
                        hidden = 1;
                    const double *q = Q + row * D, *k = K + ((b * Hkv + h / g) * Lk + j) * D;
                    double x = 0.0;
                    for (size_t d = 0; d < D; d++)
                        x += q[d] * k[d];
                    x *= scale;
                    if (var->softcap > 0.0)
                        x = var->softcap * tanh(x / var->softcap);
                    if (mask) {
                        const double mv = mask[row * Lk + j];
                        if (mv == -INFINITY)
                            hidden = 1;
                        x += mv;
                    }
                    if (var->alibi)
                        x -= var->alibi[h] * fabs((double)(pos - jj));
                    s[j] = hidden ? -INFINITY : x;
                    has_nan |= isnan(s[j]);
                    if (s[j] > mx)
                        mx = s[j];
                }
                double sum = 0.0;
                for (size_t j = 0; j < Lk; j++)
                    sum += mx == -INFINITY ? 0.0 : exp(s[j] - mx);
                const double denom = sum + (var->sinks && mx != -INFINITY
                                                ? exp(var->sinks[h] - mx) : 0.0);
                for (size_t j = 0; j < Lk; j++) {
                    const double pj = has_nan ? NAN : mx == -INFINITY ? 0.0 : exp(s[j] - mx) / denom;
                    s[j] = pj;
                    if (P)
                        P[row * Lk + j] = pj;
                }
                if (lse)
                    lse[row] = has_nan ? NAN : mx == -INFINITY ? -INFINITY : mx + log(sum);
                for (size_t d = 0; d < Dv; d++) {
                    double acc = 0.0;
                    for (size_t j = 0; j < Lk; j++)
                        if (s[j] != 0.0 || has_nan)
                            acc += s[j] * V[((b * Hkv + h / g) * Lk + j) * Dv + d];
                    O[row * Dv + d] = acc;
                }
            }
    }
    free(s);
}

void ref_rope(size_t B, size_t H, size_t T, size_t D, size_t R, int gptj, double theta,
              const double *inv_freq, const int *positions, const double *X, double *Y)
{
    double *row = malloc((D ? D : 1) * sizeof *row);
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < H; h++)
            for (size_t t = 0; t < T; t++) {
                const double *x = X + ((b * H + h) * T + t) * D;
                double *y = Y + ((b * H + h) * T + t) * D;
                const double pos = (double)t + (positions ? positions[b] : 0);
                memcpy(row, x, D * sizeof *row);
                for (size_t i = 0; i < R / 2; i++) {
                    const double f = inv_freq ? inv_freq[i] : pow(theta, -2.0 * (double)i / (double)R);
                    const size_t a = gptj ? 2 * i : i, c = gptj ? 2 * i + 1 : i + R / 2;
                    const double cs = cos(pos * f), sn = sin(pos * f);
                    y[a] = row[a] * cs - row[c] * sn;
                    y[c] = row[c] * cs + row[a] * sn;
                }
                for (size_t d = R; d < D; d++)
                    y[d] = row[d];
            }
    free(row);
}

/* [B, T, heads*D] -> [B, heads, T, D] and back. */
static void split_heads(size_t B, size_t T, size_t heads, size_t D, const double *x, double *y)
{
    for (size_t b = 0; b < B; b++)
        for (size_t t = 0; t < T; t++)
            for (size_t h = 0; h < heads; h++)
                for (size_t d = 0; d < D; d++)
                    y[((b * heads + h) * T + t) * D + d] = x[(b * T + t) * heads * D + h * D + d];
}
static void merge_heads(size_t B, size_t T, size_t heads, size_t D, const double *y, double *x)
{
    for (size_t b = 0; b < B; b++)
        for (size_t t = 0; t < T; t++)
            for (size_t h = 0; h < heads; h++)
                for (size_t d = 0; d < D; d++)
                    x[(b * T + t) * heads * D + h * D + d] = y[((b * heads + h) * T + t) * D + d];
}

void ref_mha(const ref_mha_layer *m, size_t B, size_t Lq, size_t Lk, int causal,
             const double *mask, const int *lengths, const double *query, const double *key,
             const double *value, double *out, double *weights, double *head_weights)
{
    ref_mha_variant(m, NULL, B, Lq, Lk, causal, mask, lengths, query, key, value, out, weights,
                    head_weights);
}

void ref_mha_variant(const ref_mha_layer *m, const ref_variant *var, size_t B, size_t Lq,
                     size_t Lk, int causal, const double *mask, const int *lengths,
                     const double *query, const double *key, const double *value, double *out,
                     double *weights, double *head_weights)
{
    const size_t E = m->E, H = m->H, D = E / H, KV = m->Hkv * D;
    double *q = malloc((B * Lq * E + 1) * sizeof *q), *qh = malloc((B * Lq * E + 1) * sizeof *qh);
    double *k = malloc((B * Lk * KV + 1) * sizeof *k), *kh = malloc((B * Lk * KV + 1) * sizeof *kh);
    double *v = malloc((B * Lk * KV + 1) * sizeof *v), *vh = malloc((B * Lk * KV + 1) * sizeof *vh);
    double *oh = malloc((B * Lq * E + 1) * sizeof *oh), *o = malloc((B * Lq * E + 1) * sizeof *o);
    double *p = malloc((B * H * Lq * Lk + 1) * sizeof *p);
    ref_linear(B * Lq, E, E, query, m->Wq, m->bq, q);
    ref_linear(B * Lk, m->kdim, KV, key, m->Wk, m->bk, k);
    ref_linear(B * Lk, m->vdim, KV, value, m->Wv, m->bv, v);
    split_heads(B, Lq, H, D, q, qh);
    split_heads(B, Lk, m->Hkv, D, k, kh);
    split_heads(B, Lk, m->Hkv, D, v, vh);
    if (var)
        ref_sdpa_variant(B, H, m->Hkv, Lq, Lk, D, D, 1.0 / sqrt((double)D), causal, mask, lengths,
                         var, qh, kh, vh, oh, p, NULL);
    else
        ref_sdpa(B, H, m->Hkv, Lq, Lk, D, D, 1.0 / sqrt((double)D), causal, mask, lengths, qh, kh,
                 vh, oh, p, NULL);
    merge_heads(B, Lq, H, D, oh, o);
    ref_linear(B * Lq, E, E, o, m->Wo, m->bo, out);
    if (head_weights)
        for (size_t i = 0; i < B * H * Lq * Lk; i++)
            head_weights[i] = p[i];
    if (weights)
        for (size_t b = 0; b < B; b++)
            for (size_t i = 0; i < Lq * Lk; i++) {
                double acc = 0.0;
                for (size_t h = 0; h < H; h++)
                    acc += p[(b * H + h) * Lq * Lk + i];
                weights[b * Lq * Lk + i] = acc / (double)H;
            }
    free(q), free(qh), free(k), free(kh), free(v), free(vh), free(oh), free(o), free(p);
}

void ref_quantize_q8(size_t rows, size_t n, const double *x, double *out)
{
    for (size_t r = 0; r < rows; r++) {
        float m = 0.0f;
        for (size_t i = 0; i < n; i++)
            m = fmaxf(m, fabsf((float)x[r * n + i]));
        const float inv = m > 0.0f ? 127.0f / m : 0.0f, scale = m / 127.0f;
        for (size_t i = 0; i < n; i++) {
            const float q = rintf((float)x[r * n + i] * inv);
            out[r * n + i] = (double)(q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q) * scale;
        }
    }
}
