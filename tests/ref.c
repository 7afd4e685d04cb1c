/* The double-precision reference (see ref.h). Plain loops: clarity over speed. */
#include "ref.h"

#include <math.h>
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
                    if (ref_hidden(causal, lengths, b, i, j, Lq, Lk))
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
