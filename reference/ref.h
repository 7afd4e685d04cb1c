/* Double-precision reference of every clattn operation, on dense host arrays. Written from the
 * definitions (include/clattn.h's semantics; docs/ARCHITECTURE.md "Semantics"), independently
 * of the library's kernels. Used by the tests and by clattn-bench --check. */
#ifndef CLATTN_REF_H
#define CLATTN_REF_H
#include <stddef.h>

/* Y[r, n] = sum_k X[r, k] * W[n, k] (+ b[n]); X [rows, K], W [N, K], Y [rows, N]. */
void ref_linear(size_t rows, size_t K, size_t N, const double *X, const double *W, const double *b,
                double *Y);

/* S[b,h,i,j] = scale * sum_d Q[b,h,i,d] * K[b,h/g,j,d]; dense [B,Hq,Lq,D], [B,Hkv,Lk,D]. */
void ref_scores(size_t B, size_t Hq, size_t Hkv, size_t Lq, size_t Lk, size_t D, double scale,
                const double *Q, const double *K, double *S);

/* Whether key j is hidden from query i of batch item b. causal: 0 none, 1 top-left, 2
 * bottom-right; lengths may be NULL. */
int ref_hidden(int causal, const int *lengths, size_t b, size_t i, size_t j, size_t Lq, size_t Lk);

/* In place: hidden -> -inf, else + mask (dense [B,H,Lq,Lk] or NULL). */
void ref_mask(size_t B, size_t H, size_t Lq, size_t Lk, int causal, const double *mask,
              const int *lengths, double *S);

/* P = softmax rows of S (all -inf -> 0); lse may be NULL. */
void ref_softmax(size_t rows, size_t Lk, const double *S, double *P, double *lse);

/* O[b,h] = P[b,h] · V[b,h/g]. */
void ref_weighted_sum(size_t B, size_t Hq, size_t Hkv, size_t Lq, size_t Lk, size_t Dv,
                      const double *P, const double *V, double *O);

/* The whole attention; P and lse may be NULL. */
void ref_sdpa(size_t B, size_t Hq, size_t Hkv, size_t Lq, size_t Lk, size_t D, size_t Dv,
              double scale, int causal, const double *mask, const int *lengths, const double *Q,
              const double *K, const double *V, double *O, double *P, double *lse);

/* Today's models' variants (include/clattn.h: the window in clattn_mask_params, and
 * clattn_logit_params). A zeroed struct is not "off": start from ref_variant_none(). */
typedef struct ref_variant {
    long window_left, window_right; /* -1: unbounded */
    size_t keep_first;              /* keys below stay visible whatever window_left says */
    double softcap;                 /* 0: off */
    const double *alibi;            /* slopes [Hq] or NULL */
    const double *sinks;            /* sink logits [Hq] or NULL */
    long query_offset;              /* added to every query's position among the keys */
} ref_variant;

ref_variant ref_variant_none(void);

/* The standard ALiBi slopes, computed as BLOOM's paper and code describe them (independently of
 * clattn_alibi_slopes). */
void ref_alibi_slopes(size_t heads, double *slopes);
/* CLATTN_Q8 storage as include/clattn.h defines it, rows of n values: each value x (as float)
 * becomes q = x · (127 / m) rounded to nearest even, in float (m = max |x| of its row), and is
 * read back as q · (m / 127). out may be x. */
void ref_quantize_q8(size_t rows, size_t n, const double *x, double *out);

/* ref_sdpa with the variants: per (b, h, i) row, each key's scaled score is soft-capped, the
 * mask added, ALiBi's bias added, the keys the causal mask, key lengths and window hide dropped,
 * and the softmax's denominator takes exp(sink) too; lse excludes the sink. */
void ref_sdpa_variant(size_t B, size_t Hq, size_t Hkv, size_t Lq, size_t Lk, size_t D, size_t Dv,
                      double scale, int causal, const double *mask, const int *lengths,
                      const ref_variant *var, const double *Q, const double *K, const double *V,
                      double *O, double *P, double *lse);

/* Rotary position embedding of X into Y (dense [B, H, T, D]; Y may be X): the first R dims of
 * each head vector turn in pairs ((d, d + R/2) with gptj 0, (2i, 2i + 1) with gptj 1) by the
 * angle pos * f_i, f_i = theta^(-2i/R) or inv_freq[i]; pos = t + (positions ? positions[b] : 0). */
void ref_rope(size_t B, size_t H, size_t T, size_t D, size_t R, int gptj, double theta,
              const double *inv_freq, const int *positions, const double *X, double *Y);

/* A multi-head attention layer in PyTorch's layout (weights [out, in]). KV = Hkv * (E / H). */
typedef struct ref_mha_layer {
    size_t E, H, Hkv, kdim, vdim;
    const double *Wq, *Wk, *Wv; /* [E, E], [KV, kdim], [KV, vdim] */
    const double *bq, *bk, *bv; /* [E], [KV], [KV] or NULL */
    const double *Wo, *bo;      /* [E, E], [E] or NULL */
} ref_mha_layer;

/* out [B, Lq, E] from query [B, Lq, E], key [B, Lk, kdim], value [B, Lk, vdim]; mask dense
 * [B, H, Lq, Lk] or NULL; weights [B, Lq, Lk] (mean over heads) and head_weights
 * [B, H, Lq, Lk] may be NULL. */
void ref_mha(const ref_mha_layer *m, size_t B, size_t Lq, size_t Lk, int causal,
             const double *mask, const int *lengths, const double *query, const double *key,
             const double *value, double *out, double *weights, double *head_weights);
/* The same with the attention's variants (NULL: none). */
void ref_mha_variant(const ref_mha_layer *m, const ref_variant *var, size_t B, size_t Lq,
                     size_t Lk, int causal, const double *mask, const int *lengths,
                     const double *query, const double *key, const double *value, double *out,
                     double *weights, double *head_weights);

#endif
