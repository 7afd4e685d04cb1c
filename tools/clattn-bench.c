/* clattn-bench: times scaled dot-product attention and the multi-head block on one device.
 * Prints median time, useful GFLOP/s (masked work not counted), the device memory the library
 * allocated for intermediates, and with --check the max error against the double-precision
 * reference. With no shape given it runs a suite of real model shapes. See --help. */
#define _GNU_SOURCE
#include "clattn.h"
#include "ref.h"
#include "tool_common.h"
#ifdef CLATTN_BENCH_MPI
#include "bench_mpi.h"
#endif

#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct shape {
    const char *name;
    const char *op; /* "sdpa" or "mha" */
    size_t B, H, Hkv, Lq, Lk, D;
    int causal; /* 0 none, 1 top-left, 2 bottom-right */
    clattn_path path;
    /* sdpa variants (0: off): a sliding window of `window` keys ending at the query
     * (window_left = window - 1), soft-capping, ALiBi slopes and sinks for every head. */
    size_t window;
    float softcap;
    bool alibi, sinks;
} shape;
#define NO_VARIANT 0, 0.0f, false, false

typedef struct result {
    clattn_status status;
    double median_ms, gflops, max_err;
    bool checked;
    size_t reps, lib_bytes;
} result;

typedef struct options {
    int warmup, reps;
    double max_seconds;
    bool check;
    bool host_time; /* time the call until it returns (its work enqueued), not the work */
    bool layer_scratch; /* mha: no workspace; the layer's kept scratch */
} options;

/* The reference is skipped above this many double-precision flops (it runs on one core). */
#define CHECK_BUDGET_FLOPS 4e10

static double g_peak; /* measured fp32 GFLOP/s, 0 when not measured */
static double g_bw;   /* measured global-memory read GB/s, 0 when not measured */
static cl_context g_context;
static cl_device_id g_device;
static cl_command_queue g_queue;
static clattn_context *g_cc;

static void die(const char *what, cl_int st)
{
    fprintf(stderr, "clattn-bench: %s: %s (%d)\n", what, clattn_status_name(st), st);
    exit(1);
}

/* Opens `path` for a JSON array of rows and writes its "[": *f stays NULL without a path.
 * False (and a message) when the file cannot be written. */
static bool json_open(const char *path, FILE **f)
{
    *f = NULL;
    if (!path)
        return true;
    if (!(*f = fopen(path, "w"))) {
        fprintf(stderr, "clattn-bench: cannot write %s\n", path);
        return false;
    }
    fprintf(*f, "[\n");
    return true;
}

static cl_mem upload_bytes(const void *host, size_t bytes)
{
    cl_int err;
    cl_mem b = clCreateBuffer(g_context, CL_MEM_READ_WRITE | (host ? CL_MEM_COPY_HOST_PTR : 0),
                              bytes ? bytes : 1, (void *)host, &err);
    if (err != CL_SUCCESS)
        die("clCreateBuffer", err);
    return b;
}

static cl_mem upload(const float *host, size_t n)
{
    return upload_bytes(host, n * sizeof(float));
}

/* IEEE binary16 bits of f, rounded to nearest even (what an fp16 KV cache's appends take). */
static uint16_t to_half(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t a = x & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN */
        return sign | 0x7e00u;
    if (a >= 0x477ff000u) /* 65520 and up round past 65504, the largest half: infinity */
        return sign | 0x7c00u;
    if (a < 0x38800000u) { /* below 2^-14: a multiple of 2^-24, exact scaling, lrintf ties to even */
        float m;
        memcpy(&m, &a, sizeof m);
        return sign | (uint16_t)lrintf(m * 16777216.0f);
    }
    /* Rebias the exponent (127 - 15), drop 13 mantissa bits rounding to nearest even; a carry
     * into the exponent is the right answer. */
    uint32_t h = (a - 0x38000000u) >> 13, rest = a & 0x1fffu;
    h += rest > 0x1000u || (rest == 0x1000u && (h & 1u));
    return sign | (uint16_t)h;
}

/* Query-key pairs that survive the causal mask and a window of `window` keys (0: none), per
 * (batch, head). */
static double measure_bandwidth(const clattn_device_info *info, bool verbose);

static double visible_pairs(size_t Lq, size_t Lk, int causal, size_t window)
{
    double n = 0;
    for (size_t i = 0; i < Lq; i++) {
        long v = (long)Lk;
        const long pos = causal == 1 ? (long)i : (long)i + (long)Lk - (long)Lq;
        if (causal)
            v = pos + 1;
        v = v < 0 ? 0 : v > (long)Lk ? (long)Lk : v;
        long lo = window ? pos - (long)window + 1 : 0;
        lo = lo < 0 ? 0 : lo;
        n += (double)(v > lo ? v - lo : 0);
    }
    return n;
}

static double sdpa_flops(const shape *s)
{
    return (double)(s->B * s->H) * visible_pairs(s->Lq, s->Lk, s->causal, s->window) * 4.0 *
           (double)s->D;
}

static bool has_variant(const shape *s)
{
    return s->window || s->softcap > 0.0f || s->alibi || s->sinks;
}

static double mha_flops(const shape *s)
{
    double E = (double)(s->H * s->D), KV = (double)(s->Hkv * s->D);
    return sdpa_flops(s) + 2.0 * (double)s->B * ((double)s->Lq * E * E * 2.0 + (double)s->Lk * E * KV * 2.0);
}

/* Runs `enqueue` warmup times, then at least 3 and up to opts->reps times within max_seconds. */
typedef clattn_status (*enqueue_fn)(void *state);
static void time_runs(enqueue_fn fn, void *state, const options *o, result *r)
{
    for (int i = 0; i < o->warmup; i++) {
        if ((r->status = fn(state)) != CL_SUCCESS)
            return;
        clFinish(g_queue);
    }
    double *t = malloc((size_t)(o->reps > 3 ? o->reps : 3) * sizeof *t);
    size_t n = 0;
    double start = tool_now();
    while (n < 3 || ((int)n < o->reps && tool_now() - start < o->max_seconds)) {
        double t0 = tool_now();
        if ((r->status = fn(state)) != CL_SUCCESS)
            break;
        const double t1 = tool_now();
        clFinish(g_queue);
        t[n++] = (o->host_time ? t1 : tool_now()) - t0;
    }
    if (n > 0) {
        r->median_ms = 1e3 * tool_median(t, n);
    }
    r->reps = n;
    free(t);
}

/* --- sdpa ------------------------------------------------------------------------------------ */

typedef struct sdpa_state {
    clattn_tensor q, k, v, o;
    clattn_sdpa_params p;
} sdpa_state;

static clattn_status sdpa_enqueue(void *s)
{
    sdpa_state *st = s;
    return clattn_sdpa(g_cc, g_queue, &st->q, &st->k, &st->v, &st->o, &st->p, 0, NULL, NULL);
}

static result run_sdpa(const shape *s, const options *o)
{
    result r = {0};
    const size_t nq = s->B * s->H * s->Lq * s->D, nk = s->B * s->Hkv * s->Lk * s->D;
    float *hq = tool_random_floats(nq, 1, 1.0f), *hk = tool_random_floats(nk, 2, 1.0f),
          *hv = tool_random_floats(nk, 3, 1.0f);
    cl_mem bq = upload(hq, nq), bk = upload(hk, nk), bv = upload(hv, nk), bo = upload(hq, nq);
    sdpa_state st;
    st.q = clattn_tensor_bhtd(bq, 0, s->B, s->H, s->Lq, s->D);
    st.k = clattn_tensor_bhtd(bk, 0, s->B, s->Hkv, s->Lk, s->D);
    st.v = clattn_tensor_bhtd(bv, 0, s->B, s->Hkv, s->Lk, s->D);
    st.o = clattn_tensor_bhtd(bo, 0, s->B, s->H, s->Lq, s->D);
    st.p = clattn_sdpa_params_default();
    st.p.mask.causal = (clattn_causal)s->causal;
    st.p.path = s->path;
    /* The variants, with what the reference needs to check them (head 0's slope and sink). */
    cl_mem bslopes = NULL, bsinks = NULL;
    ref_variant rv = ref_variant_none();
    double slope0 = 0.0, sink0 = 0.0;
    if (s->window) {
        st.p.mask.window_left = (int64_t)s->window - 1;
        rv.window_left = (long)s->window - 1;
    }
    st.p.logits.softcap = s->softcap;
    rv.softcap = s->softcap;
    float *per_head = malloc(s->H * sizeof *per_head);
    if (s->alibi) {
        clattn_alibi_slopes(s->H, per_head);
        bslopes = upload(per_head, s->H);
        st.p.logits.alibi_slopes = bslopes;
        slope0 = per_head[0];
        rv.alibi = &slope0;
    }
    if (s->sinks) {
        for (size_t h = 0; h < s->H; h++)
            per_head[h] = 0.5f + 0.25f * (float)(h % 4);
        bsinks = upload(per_head, s->H);
        st.p.logits.sinks = bsinks;
        sink0 = per_head[0];
        rv.sinks = &sink0;
    }
    free(per_head);
    r.status = clattn_sdpa_workspace_size(g_cc, &st.q, &st.k, &st.v, &st.o, &st.p, &r.lib_bytes);
    if (r.status == CL_SUCCESS)
        time_runs(sdpa_enqueue, &st, o, &r);
    if (r.status == CL_SUCCESS)
        r.gflops = sdpa_flops(s) / (r.median_ms * 1e-3) * 1e-9;
    if (r.status == CL_SUCCESS && o->check) {
        /* Batch item 0, query head 0 (kv head 0): enough to catch a wrong kernel. */
        const size_t n0 = s->Lq * s->D;
        float *got = malloc(n0 * sizeof *got);
        clEnqueueReadBuffer(g_queue, bo, CL_TRUE, 0, n0 * sizeof *got, got, 0, NULL, NULL);
        double *q = tool_to_double(hq, n0), *k = tool_to_double(hk, s->Lk * s->D),
               *v = tool_to_double(hv, s->Lk * s->D), *ref = malloc(n0 * sizeof *ref);
        r.checked = true;
        if (4.0 * (double)s->Lq * (double)s->Lk * (double)s->D < CHECK_BUDGET_FLOPS) {
            ref_sdpa_variant(1, 1, 1, s->Lq, s->Lk, s->D, s->D, 1.0 / sqrt((double)s->D),
                             s->causal, NULL, NULL, &rv, q, k, v, ref, NULL, NULL);
            r.max_err = tool_max_abs_diff(got, ref, n0);
        } else if (has_variant(s)) {
            r.checked = false; /* too large for the reference, and no shortcut below applies */
        } else {
            /* 64 rows spread over the sequence: each sees a prefix of the keys, so each is an
             * unmasked attention over that prefix. */
            for (size_t t = 0; t < 64; t++) {
                size_t i = (s->Lq - 1) * t / 63;
                double hi = visible_pairs(i + 1, s->Lk, s->causal, 0) -
                            visible_pairs(i, s->Lk, s->causal, 0);
                if (s->causal == 2) /* bottom-right aligns the last query with the last key */
                    hi = fmin((double)s->Lk, fmax(0.0, (double)i + (double)s->Lk - (double)s->Lq + 1));
                ref_sdpa(1, 1, 1, 1, (size_t)hi, s->D, s->D, 1.0 / sqrt((double)s->D), 0, NULL,
                         NULL, q + i * s->D, k, v, ref, NULL, NULL);
                r.max_err = fmax(r.max_err, tool_max_abs_diff(got + i * s->D, ref, s->D));
            }
        }
        free(got), free(q), free(k), free(v), free(ref);
    }
    clReleaseMemObject(bq), clReleaseMemObject(bk), clReleaseMemObject(bv), clReleaseMemObject(bo);
    if (bslopes)
        clReleaseMemObject(bslopes);
    if (bsinks)
        clReleaseMemObject(bsinks);
    free(hq), free(hk), free(hv);
    return r;
}

/* --- mha ------------------------------------------------------------------------------------- */

typedef struct mha_state {
    clattn_mha *mha;
    clattn_tensor x, kv, out;
    bool self;
    clattn_mha_forward_params fp;
} mha_state;

static clattn_status mha_enqueue(void *s)
{
    mha_state *st = s;
    const clattn_tensor *kv = st->self ? &st->x : &st->kv;
    return clattn_mha_forward(st->mha, g_queue, &st->x, kv, kv, &st->out, &st->fp, 0, NULL, NULL);
}

static result run_mha(const shape *s, const options *o)
{
    result r = {0};
    const size_t E = s->H * s->D, KV = s->Hkv * s->D, W3 = E + 2 * KV;
    const bool self = s->Lq == s->Lk;
    const size_t nx = s->B * s->Lq * E, nkv = s->B * s->Lk * E;
    const float ws = 1.0f / sqrtf((float)E);
    float *hx = tool_random_floats(nx, 4, 1.0f), *hkv = tool_random_floats(nkv, 5, 1.0f);
    float *hw = tool_random_floats(W3 * E, 6, ws), *hb = tool_random_floats(W3, 7, 0.1f),
          *hwo = tool_random_floats(E * E, 8, ws), *hbo = tool_random_floats(E, 9, 0.1f);
    cl_mem bx = upload(hx, nx), bkv = upload(hkv, nkv), bout = upload(hx, nx);
    cl_mem bw = upload(hw, W3 * E), bb = upload(hb, W3), bwo = upload(hwo, E * E), bbo = upload(hbo, E);
    clattn_tensor w = clattn_tensor_bhtd(bw, 0, 1, 1, W3, E), b = clattn_tensor_bhtd(bb, 0, 1, 1, 1, W3),
                  wo = clattn_tensor_bhtd(bwo, 0, 1, 1, E, E), bo = clattn_tensor_bhtd(bbo, 0, 1, 1, 1, E);
    clattn_mha_params mp = clattn_mha_params_default();
    mp.embed_dim = E;
    mp.num_heads = s->H;
    mp.num_kv_heads = s->Hkv;
    mp.in_proj_weight = &w;
    mp.in_proj_bias = &b;
    mp.out_proj_weight = &wo;
    mp.out_proj_bias = &bo;
    mha_state st = {0};
    st.self = self;
    st.x = clattn_tensor_bhtd(bx, 0, s->B, 1, s->Lq, E);
    st.kv = clattn_tensor_bhtd(bkv, 0, s->B, 1, s->Lk, E);
    st.out = clattn_tensor_bhtd(bout, 0, s->B, 1, s->Lq, E);
    st.fp = clattn_mha_forward_params_default();
    st.fp.mask.causal = (clattn_causal)s->causal;
    st.fp.path = s->path;
    r.status = clattn_mha_create(g_cc, &mp, &st.mha);
    const clattn_tensor *kv = self ? &st.x : &st.kv;
    if (r.status == CL_SUCCESS)
        r.status = clattn_mha_workspace_size(st.mha, &st.x, kv, kv, &st.fp, &r.lib_bytes);
    /* The layer's intermediates in a workspace of the program's, allocated once, or with
     * --layer-scratch in the scratch the layer keeps between forwards. */
    cl_mem workspace = NULL;
    if (r.status == CL_SUCCESS && r.lib_bytes > 0 && !o->layer_scratch) {
        workspace = clCreateBuffer(g_context, CL_MEM_READ_WRITE, r.lib_bytes, NULL, &r.status);
        st.fp.workspace = workspace;
    }
    if (r.status == CL_SUCCESS)
        time_runs(mha_enqueue, &st, o, &r);
    if (r.status == CL_SUCCESS)
        r.gflops = mha_flops(s) / (r.median_ms * 1e-3) * 1e-9;
    if (r.status == CL_SUCCESS && o->check && mha_flops(s) / (double)s->B < CHECK_BUDGET_FLOPS) {
        /* Batch item 0 through the whole layer. */
        const size_t n0 = s->Lq * E;
        float *got = malloc(n0 * sizeof *got);
        clEnqueueReadBuffer(g_queue, bout, CL_TRUE, 0, n0 * sizeof *got, got, 0, NULL, NULL);
        double *x = tool_to_double(hx, n0), *kvd = self ? x : tool_to_double(hkv, s->Lk * E);
        double *W = tool_to_double(hw, W3 * E), *Bi = tool_to_double(hb, W3), *Wo = tool_to_double(hwo, E * E),
               *Bo = tool_to_double(hbo, E), *ref = malloc(n0 * sizeof *ref);
        ref_mha_layer L = {E, s->H, s->Hkv, E, E, W, W + E * E, W + (E + KV) * E,
                           Bi, Bi + E, Bi + E + KV, Wo, Bo};
        ref_mha(&L, 1, s->Lq, s->Lk, s->causal, NULL, NULL, x, kvd, kvd, ref, NULL, NULL);
        r.max_err = tool_max_abs_diff(got, ref, n0);
        r.checked = true;
        if (!self)
            free(kvd);
        free(got), free(x), free(W), free(Bi), free(Wo), free(Bo), free(ref);
    }
    clattn_mha_destroy(&st.mha);
    if (workspace)
        clReleaseMemObject(workspace);
    cl_mem all[] = {bx, bkv, bout, bw, bb, bwo, bbo};
    for (size_t i = 0; i < 7; i++)
        clReleaseMemObject(all[i]);
    free(hx), free(hkv), free(hw), free(hb), free(hwo), free(hbo);
    return r;
}

/* --- output ---------------------------------------------------------------------------------- */

static const char *causal_name(int c)
{
    return c == 1 ? "top-left" : c == 2 ? "bottom-right" : "none";
}

static const char *path_name(clattn_path p)
{
    return p == CLATTN_PATH_UNFUSED ? "unfused" : p == CLATTN_PATH_FUSED ? "fused" : "auto";
}

static void print_header(void)
{
    printf("%-12s %-4s %3s %7s %6s %6s %4s %-12s %-7s %10s %9s %9s %9s%s\n", "shape", "op", "B",
           "H/Hkv", "Lq", "Lk", "D", "causal", "path", "median ms", "GFLOP/s", "lib MiB",
           "max err", g_peak > 0 ? "  % peak" : "");
}

static void print_row(const shape *s, const result *r)
{
    char heads[16], err[16];
    snprintf(heads, sizeof heads, "%zu/%zu", s->H, s->Hkv);
    if (r->checked)
        snprintf(err, sizeof err, "%.2e", r->max_err);
    else
        snprintf(err, sizeof err, "-");
    if (r->status != CL_SUCCESS) {
        printf("%-12s %-4s %3zu %7s %6zu %6zu %4zu %-12s %-7s  error: %s\n", s->name, s->op, s->B,
               heads, s->Lq, s->Lk, s->D, causal_name(s->causal), path_name(s->path),
               clattn_status_name(r->status));
        return;
    }
    printf("%-12s %-4s %3zu %7s %6zu %6zu %4zu %-12s %-7s %10.3f %9.2f %9.2f %9s", s->name,
           s->op, s->B, heads, s->Lq, s->Lk, s->D, causal_name(s->causal), path_name(s->path),
           r->median_ms, r->gflops, (double)r->lib_bytes / 1048576.0, err);
    if (g_peak > 0)
        printf("  %6.1f", 100.0 * r->gflops / g_peak);
    printf("\n");
}

static void json_row(FILE *f, const shape *s, const result *r, const char *device, bool first)
{
    fprintf(f, "%s  {\"shape\": \"%s\", \"op\": \"%s\", \"device\": \"%s\", \"batch\": %zu, "
               "\"heads\": %zu, \"kv_heads\": %zu, \"lq\": %zu, \"lk\": %zu, \"head_dim\": %zu, "
               "\"causal\": \"%s\", \"path\": \"%s\", \"status\": \"%s\", \"reps\": %zu, ",
            first ? "" : ",\n", s->name, s->op, device, s->B, s->H, s->Hkv, s->Lq, s->Lk, s->D,
            causal_name(s->causal), path_name(s->path), clattn_status_name(r->status), r->reps);
    if (r->status == CL_SUCCESS)
        fprintf(f, "\"median_ms\": %.6f, \"gflops\": %.4f, \"lib_bytes\": %zu, ", r->median_ms,
                r->gflops, r->lib_bytes);
    else
        fprintf(f, "\"median_ms\": null, \"gflops\": null, \"lib_bytes\": null, ");
    if (g_peak > 0 && r->status == CL_SUCCESS)
        fprintf(f, "\"peak_gflops\": %.4f, \"pct_peak\": %.3f, ", g_peak, 100.0 * r->gflops / g_peak);
    if (g_bw > 0)
        fprintf(f, "\"read_bw_gbs\": %.3f, ", g_bw);
    if (r->checked)
        fprintf(f, "\"max_err\": %.6g}", r->max_err);
    else
        fprintf(f, "\"max_err\": null}");
}

/* --- the demo -------------------------------------------------------------------------------- */

static void print_grid(const char *title, const char *const *tok, const float *g, size_t n)
{
    printf("\n%s\n%8s", title, "");
    for (size_t j = 0; j < n; j++)
        printf("%8.7s", tok[j]);
    printf("\n");
    for (size_t i = 0; i < n; i++) {
        printf("%8.7s", tok[i]);
        for (size_t j = 0; j < n; j++) {
            if (isinf(g[i * n + j]))
                printf("%8s", g[i * n + j] < 0 ? "-inf" : "inf");
            else
                printf("%8.3f", g[i * n + j]);
        }
        printf("\n");
    }
}

static int demo(void)
{
    enum { T = 8, E = 16 };
    static const char *const tok[T] = {"the", "cat", "sat", "on", "the", "mat", "because", "it"};
    /* Each word's embedding is made from its letters, so both "the" get the same vector. */
    float x[T * E];
    for (size_t t = 0; t < T; t++) {
        unsigned h = 2166136261u;
        for (const char *c = tok[t]; *c; c++)
            h = (h ^ (unsigned char)*c) * 16777619u;
        for (size_t e = 0; e < E; e++) {
            h = h * 1103515245u + 12345u;
            x[t * E + e] = (float)((h >> 8) & 0xffff) / 32768.0f - 1.0f;
        }
    }
    float *wq = tool_random_floats(E * E, 11, 1.0f), *wk = tool_random_floats(E * E, 12, 1.0f);
    cl_mem bx = upload(x, T * E), bq = upload(wq, E * E), bk = upload(wk, E * E);
    float zero[T * T] = {0};
    cl_mem Q = upload(zero, T * E), K = upload(zero, T * E), S = upload(zero, T * T);
    clattn_tensor tx = clattn_tensor_bhtd(bx, 0, 1, 1, T, E), twq = clattn_tensor_bhtd(bq, 0, 1, 1, E, E),
                  twk = clattn_tensor_bhtd(bk, 0, 1, 1, E, E), tq = clattn_tensor_bhtd(Q, 0, 1, 1, T, E),
                  tk = clattn_tensor_bhtd(K, 0, 1, 1, T, E), ts = clattn_tensor_bhtd(S, 0, 1, 1, T, T);
    printf("One attention head over an 8-token sentence (E = D = %d; tokens are rows: Q = X·W_Qᵀ).\n", E);
    clattn_status st = clattn_linear(g_cc, g_queue, &tx, &twq, NULL, &tq, 0, NULL, NULL);
    if (st == CL_SUCCESS)
        st = clattn_linear(g_cc, g_queue, &tx, &twk, NULL, &tk, 0, NULL, NULL);
    if (st == CL_SUCCESS)
        st = clattn_scores(g_cc, g_queue, &tq, &tk, &ts, CLATTN_SCALE_DEFAULT, 0, NULL, NULL);
    float g[T * T];
    if (st == CL_SUCCESS)
        st = clEnqueueReadBuffer(g_queue, S, CL_TRUE, 0, sizeof g, g, 0, NULL, NULL);
    if (st == CL_SUCCESS)
        print_grid("Scores S = Q·Kᵀ/√D (row: the query's token; column: the key's token):", tok, g, T);
    clattn_mask_params mp = clattn_mask_params_default();
    mp.causal = CLATTN_CAUSAL_TOP_LEFT;
    if (st == CL_SUCCESS)
        st = clattn_mask(g_cc, g_queue, &ts, &mp, 0, NULL, NULL);
    if (st == CL_SUCCESS)
        st = clEnqueueReadBuffer(g_queue, S, CL_TRUE, 0, sizeof g, g, 0, NULL, NULL);
    if (st == CL_SUCCESS)
        print_grid("After the causal mask (a token may not look at later tokens):", tok, g, T);
    if (st == CL_SUCCESS)
        st = clattn_softmax(g_cc, g_queue, &ts, &ts, NULL, 0, NULL, NULL);
    if (st == CL_SUCCESS)
        st = clEnqueueReadBuffer(g_queue, S, CL_TRUE, 0, sizeof g, g, 0, NULL, NULL);
    if (st == CL_SUCCESS)
        print_grid("Softmax of each row: how much each token attends to each earlier one (rows sum to 1):",
                   tok, g, T);
    if (st == CL_SUCCESS)
        printf("\nThe output of each token is these weights times the value vectors (O = P·V).\n");
    cl_mem all[] = {bx, bq, bk, Q, K, S};
    for (size_t i = 0; i < 6; i++)
        clReleaseMemObject(all[i]);
    free(wq), free(wk);
    if (st != CL_SUCCESS)
        die("demo", st);
    return 0;
}

/* --- decoding over a KV cache ---------------------------------------------------------------- */

typedef struct decode_state {
    clattn_kv_cache *cache;
    clattn_tensor q, o;
    clattn_kv_attend_params ap;
} decode_state;

static clattn_status decode_enqueue(void *s)
{
    decode_state *st = s;
    return clattn_kv_cache_attend(st->cache, g_queue, &st->q, &st->o, &st->ap, 0, NULL, NULL);
}

/* --- packed batches ---------------------------------------------------------------------------- */

/* Sequences of 17, 90, 512 and 1024 tokens (causal self attention, H = 8, D = 64) three ways: one
 * packed call (cu_seqlens), one call per sequence, and one call on the batch padded to the
 * longest with key lengths. */
#define VL_N 4
static const size_t vl_len[VL_N] = {17, 90, 512, 1024};

typedef struct varlen_state {
    int how; /* 0 packed, 1 one by one, 2 padded */
    clattn_tensor q, k, v, o;          /* packed [1, H, total, D] (BTHD rows) */
    clattn_tensor pq, pk, pv, po;      /* padded [B, H, 1024, D] */
    size_t cu[VL_N + 1];
    cl_mem lens;
} varlen_state;

static clattn_status varlen_enqueue(void *s)
{
    varlen_state *st = s;
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.mask.causal = CLATTN_CAUSAL_TOP_LEFT;
    p.path = CLATTN_PATH_FUSED;
    if (st->how == 0) {
        p.cu_seqlens_q = st->cu, p.num_seqs = VL_N;
        return clattn_sdpa(g_cc, g_queue, &st->q, &st->k, &st->v, &st->o, &p, 0, NULL, NULL);
    }
    if (st->how == 2) {
        p.mask.key_lengths = st->lens;
        return clattn_sdpa(g_cc, g_queue, &st->pq, &st->pk, &st->pv, &st->po, &p, 0, NULL, NULL);
    }
    clattn_status r = CL_SUCCESS;
    for (size_t b = 0; b < VL_N && r == CL_SUCCESS; b++) {
        clattn_tensor q = st->q, k = st->k, v = st->v, o = st->o;
        q.offset = k.offset = v.offset = o.offset = st->cu[b] * q.strides[2];
        q.dims[2] = k.dims[2] = v.dims[2] = o.dims[2] = vl_len[b];
        r = clattn_sdpa(g_cc, g_queue, &q, &k, &v, &o, &p, 0, NULL, NULL);
    }
    return r;
}

static int run_varlen(const options *o, const clattn_device_info *info)
{
    const size_t H = 8, D = 64, T = vl_len[VL_N - 1];
    varlen_state st = {0};
    for (size_t b = 0; b < VL_N; b++)
        st.cu[b + 1] = st.cu[b] + vl_len[b];
    const size_t total = st.cu[VL_N];
    float *h = tool_random_floats(VL_N * T * H * D, 5, 1.0f);
    cl_mem bufs[8];
    for (int i = 0; i < 8; i++) /* packed q, k, v, o; padded q, k, v, o */
        bufs[i] = upload(h, (i < 4 ? total : VL_N * T) * H * D);
    st.q = clattn_tensor_bthd(bufs[0], 0, 1, total, H, D);
    st.k = clattn_tensor_bthd(bufs[1], 0, 1, total, H, D);
    st.v = clattn_tensor_bthd(bufs[2], 0, 1, total, H, D);
    st.o = clattn_tensor_bthd(bufs[3], 0, 1, total, H, D);
    st.pq = clattn_tensor_bhtd(bufs[4], 0, VL_N, H, T, D);
    st.pk = clattn_tensor_bhtd(bufs[5], 0, VL_N, H, T, D);
    st.pv = clattn_tensor_bhtd(bufs[6], 0, VL_N, H, T, D);
    st.po = clattn_tensor_bhtd(bufs[7], 0, VL_N, H, T, D);
    int lens[VL_N];
    for (size_t b = 0; b < VL_N; b++)
        lens[b] = (int)vl_len[b];
    st.lens = upload_bytes(lens, sizeof lens);
    printf("packed batch of sequences of 17, 90, 512 and 1024 tokens, causal, H = %zu, D = %zu, "
           "fused, on %s\n", H, D, info->name);
    static const char *names[3] = {"packed (cu_seqlens)", "one call per sequence",
                                   "padded to 1024, key lengths"};
    result r[3] = {{0}};
    int failures = 0;
    for (int k = 0; k < 3; k++) {
        st.how = k;
        time_runs(varlen_enqueue, &st, o, &r[k]);
    }
    for (int k = 0; k < 3; k++) {
        if (r[k].status != CL_SUCCESS || r[1].status != CL_SUCCESS) {
            printf("%-30s error: %s\n", names[k],
                   clattn_status_name(r[k].status ? r[k].status : r[1].status));
            failures++;
        } else {
            printf("%-30s %10.3f ms  %5.2fx one by one\n", names[k], r[k].median_ms,
                   r[k].median_ms / r[1].median_ms);
        }
    }
    for (int i = 0; i < 8; i++)
        clReleaseMemObject(bufs[i]);
    clReleaseMemObject(st.lens);
    free(h);
    return failures ? 1 : 0;
}

/* --- projections ------------------------------------------------------------------------------- */

typedef struct linear_state {
    clattn_tensor x, b, y;
    clattn_weights *w;
} linear_state;

static clattn_status linear_enqueue(void *s)
{
    linear_state *st = s;
    return clattn_linear_prepared(g_cc, g_queue, &st->x, st->w, &st->b, &st->y, 0, NULL, NULL);
}

/* Y = X·Wᵀ + b with prepared weights (what a multi-head layer's projections run), for the
 * shapes of GPT-2 small's and a GQA decoder's projections: M tokens, N outputs, K inputs. */
static int run_gemm_suite(const options *o, const clattn_device_info *info)
{
    static const size_t shapes[][3] = {
        {1024, 2304, 768}, {1024, 768, 768}, {2048, 6144, 4096}, {2048, 4096, 4096}};
    printf("projections Y = X·Wᵀ + b, prepared weights, on %s\n", info->name);
    printf("%6s %6s %6s %12s %10s%s\n", "M", "N", "K", "median ms", "GFLOP/s",
           g_peak > 0 ? "  % peak" : "");
    int failures = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const size_t M = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
        float *hx = tool_random_floats(M * K, 1, 1.0f), *hw = tool_random_floats(N * K, 2, 0.05f),
              *hb = tool_random_floats(N, 3, 0.1f);
        cl_mem bx = upload(hx, M * K), bw = upload(hw, N * K), bb = upload(hb, N),
               by = upload(NULL, M * N);
        linear_state st = {clattn_tensor_bhtd(bx, 0, 1, 1, M, K), clattn_tensor_bhtd(bb, 0, 1, 1, 1, N),
                           clattn_tensor_bhtd(by, 0, 1, 1, M, N), NULL};
        const clattn_tensor W = clattn_tensor_bhtd(bw, 0, 1, 1, N, K);
        result r = {0};
        r.status = clattn_weights_create(g_cc, g_queue, &W, 0, NULL, NULL, &st.w);
        if (r.status == CL_SUCCESS)
            time_runs(linear_enqueue, &st, o, &r);
        if (r.status != CL_SUCCESS) {
            printf("%6zu %6zu %6zu  error: %s\n", M, N, K, clattn_status_name(r.status));
            failures++;
        } else {
            const double gflops = 2.0 * (double)M * (double)N * (double)K / (r.median_ms * 1e-3) * 1e-9;
            printf("%6zu %6zu %6zu %12.3f %10.1f", M, N, K, r.median_ms, gflops);
            if (g_peak > 0)
                printf("  %6.1f", 100.0 * gflops / g_peak);
            printf("\n");
        }
        clattn_weights_destroy(&st.w);
        clReleaseMemObject(bx), clReleaseMemObject(bw), clReleaseMemObject(bb), clReleaseMemObject(by);
        free(hx), free(hw), free(hb);
    }
    return failures ? 1 : 0;
}

static const char *dtype_name(clattn_dtype t)
{
    return t == CLATTN_F16 ? "f16" : t == CLATTN_BF16 ? "bf16" : t == CLATTN_Q8 ? "q8" : "f32";
}

/* A K/V buffer [B, Hkv, len, D] as `dtype` takes it: fp16 tokens for an fp16 cache, float for
 * the others (bf16 rounds and q8 quantizes them at append). */
static cl_mem kv_tokens(clattn_dtype dtype, size_t n, unsigned seed)
{
    float *h = tool_random_floats(n, seed, 1.0f);
    cl_mem b;
    if (dtype == CLATTN_F16) {
        uint16_t *h16 = malloc(n * sizeof *h16);
        for (size_t i = 0; i < n; i++)
            h16[i] = to_half(h[i]);
        b = upload_bytes(h16, n * sizeof *h16);
        free(h16);
    } else {
        b = upload(h, n);
    }
    free(h);
    return b;
}

/* One decode step (one new query per head) over caches of 1k..32k tokens, split-KV off and
 * automatic: a GQA decoder layer's attention, B = 1, Hq = 32, Hkv = 8, D = 128, against the
 * device's read bandwidth (measured first). With `json`, also one row per cache length and
 * split setting ("splits": 0 is the automatic choice). */
static int run_decode(const options *o, const clattn_device_info *info, clattn_dtype kv_dtype,
                      const char *json)
{
    const size_t Hq = 32, Hkv = 8, D = 128;
    /* Bytes of one (token, head) row as stored: q8 keeps D int8 (rounded up to 4) and a scale. */
    const size_t row_bytes = kv_dtype == CLATTN_Q8 ? (D + 3) / 4 * 4 + 4 : D * clattn_dtype_size(kv_dtype);
    FILE *jf;
    if (!json_open(json, &jf))
        return 1;
    g_bw = measure_bandwidth(info, false);
    printf("decode step (attention of 1 new token over the cache), B = 1, Hq = %zu, Hkv = %zu, "
           "D = %zu, %s cache, on %s; read bandwidth %.1f GB/s\n", Hq, Hkv, D, dtype_name(kv_dtype),
           info->name, g_bw);
    printf("%8s %14s %14s %14s %18s %14s\n", "cache", "no split ms", "8 splits ms", "auto ms",
           "best K+V GB/s", "% of read bw");
    int failures = 0;
    for (size_t len = 1024; len <= 32768; len *= 2) {
        clattn_kv_cache_params cp = clattn_kv_cache_params_default();
        cp.batch = 1, cp.num_kv_heads = Hkv, cp.head_dim = D, cp.capacity = len;
        cp.dtype = kv_dtype;
        decode_state st = {0};
        clattn_status s = clattn_kv_cache_create(g_cc, &cp, &st.cache);
        const size_t nkv = Hkv * len * D, kv_bytes = 2 * Hkv * len * row_bytes;
        float *hq = tool_random_floats(Hq * D, 3, 1.0f);
        cl_mem bk = kv_tokens(kv_dtype, nkv, (unsigned)len), bq = upload(hq, Hq * D),
               bo = upload(hq, Hq * D);
        clattn_tensor K = clattn_tensor_bhtd(bk, 0, 1, Hkv, len, D);
        K.dtype = kv_dtype == CLATTN_F16 ? CLATTN_F16 : CLATTN_F32;
        if (s == CL_SUCCESS)
            s = clattn_kv_cache_append(st.cache, g_queue, &K, &K, NULL, 0, NULL, NULL);
        clFinish(g_queue);
        st.q = clattn_tensor_bhtd(bq, 0, 1, Hq, 1, D);
        st.o = clattn_tensor_bhtd(bo, 0, 1, Hq, 1, D);
        st.ap = clattn_kv_attend_params_default();
        result r[3] = {{0}};
        static const size_t splits[3] = {1, 8, 0};
        for (int k = 0; k < 3; k++) {
            r[k].status = s;
            st.ap.splits = splits[k];
            if (s == CL_SUCCESS)
                time_runs(decode_enqueue, &st, o, &r[k]);
        }
        if (r[0].status != CL_SUCCESS || r[1].status != CL_SUCCESS || r[2].status != CL_SUCCESS) {
            printf("%8zu  error: %s\n", len,
                   clattn_status_name(r[0].status ? r[0].status : r[1].status ? r[1].status : r[2].status));
            failures++;
        } else {
            const double best = fmin(r[0].median_ms, fmin(r[1].median_ms, r[2].median_ms)),
                         gbs = (double)kv_bytes / (best * 1e-3) * 1e-9;
            printf("%8zu %14.3f %14.3f %14.3f %18.1f", len, r[0].median_ms, r[1].median_ms,
                   r[2].median_ms, gbs);
            if (g_bw > 0)
                printf(" %14.1f", 100.0 * gbs / g_bw);
            printf("\n");
        }
        for (int k = 0; jf && k < 3; k++) {
            fprintf(jf, "%s  {\"suite\": \"decode\", \"device\": \"%s\", \"batch\": 1, \"heads\": %zu, "
                        "\"kv_heads\": %zu, \"head_dim\": %zu, \"kv_dtype\": \"%s\", \"cache_len\": %zu, "
                        "\"splits\": %zu, \"status\": \"%s\", \"reps\": %zu, ",
                    len == 1024 && k == 0 ? "" : ",\n", info->name, Hq, Hkv, D,
                    dtype_name(kv_dtype), len, splits[k], clattn_status_name(r[k].status), r[k].reps);
            /* kv_bytes: the K and V the step reads, as stored, for a bandwidth figure. */
            if (r[k].status == CL_SUCCESS)
                fprintf(jf, "\"median_ms\": %.6f, ", r[k].median_ms);
            else
                fprintf(jf, "\"median_ms\": null, ");
            fprintf(jf, "\"kv_bytes\": %zu, \"read_bw_gbs\": %.3f}", kv_bytes, g_bw);
        }
        clattn_kv_cache_destroy(&st.cache);
        clReleaseMemObject(bk), clReleaseMemObject(bq), clReleaseMemObject(bo);
        free(hq);
    }
    if (jf) {
        fprintf(jf, "\n]\n");
        fclose(jf);
    }
    return failures ? 1 : 0;
}

/* Decoding over a paged cache against a contiguous one holding the same tokens: B = 2 sequences
 * of 4k..32k tokens (Hq = 32, Hkv = 8, D = 128, automatic split), the paged cache filled a page
 * at a time, alternating between the sequences, so that their pages interleave in the pool. */
static int run_paged(const options *o, const clattn_device_info *info, clattn_dtype kv_dtype,
                     size_t page)
{
    const size_t B = 2, Hq = 32, Hkv = 8, D = 128;
    const size_t row_bytes = kv_dtype == CLATTN_Q8 ? (D + 3) / 4 * 4 + 4 : D * clattn_dtype_size(kv_dtype);
    g_bw = measure_bandwidth(info, false);
    printf("decode step over a paged cache (pages of %zu tokens, interleaved between the "
           "sequences) and a contiguous one, B = %zu, Hq = %zu, Hkv = %zu, D = %zu, %s, on %s; "
           "read bandwidth %.1f GB/s\n", page, B, Hq, Hkv, D, dtype_name(kv_dtype), info->name, g_bw);
    printf("%8s %16s %12s %14s %12s %14s\n", "cache", "contiguous ms", "paged ms", "paged/contig",
           "paged GB/s", "% of read bw");
    int failures = 0;
    for (size_t len = 4096; len <= 32768; len *= 2) {
        const size_t n = B * Hkv * len * D;
        cl_mem bk = kv_tokens(kv_dtype, n, (unsigned)len);
        float *hq = tool_random_floats(B * Hq * D, 3, 1.0f);
        cl_mem bq = upload(hq, B * Hq * D), bo = upload(hq, B * Hq * D);
        clattn_tensor K = clattn_tensor_bhtd(bk, 0, B, Hkv, len, D);
        K.dtype = kv_dtype == CLATTN_F16 ? CLATTN_F16 : CLATTN_F32;
        decode_state st[2] = {{0}};
        clattn_status s = CL_SUCCESS;
        for (int c = 0; c < 2 && s == CL_SUCCESS; c++) {
            clattn_kv_cache_params cp = clattn_kv_cache_params_default();
            cp.batch = B, cp.num_kv_heads = Hkv, cp.head_dim = D, cp.capacity = len;
            cp.dtype = kv_dtype;
            if (c == 1)
                cp.page_size = page, cp.num_pages = B * ((len + page - 1) / page);
            s = clattn_kv_cache_create(g_cc, &cp, &st[c].cache);
            st[c].q = clattn_tensor_bhtd(bq, 0, B, Hq, 1, D);
            st[c].o = clattn_tensor_bhtd(bo, 0, B, Hq, 1, D);
            st[c].ap = clattn_kv_attend_params_default();
        }
        if (s == CL_SUCCESS)
            s = clattn_kv_cache_append(st[0].cache, g_queue, &K, &K, NULL, 0, NULL, NULL);
        for (size_t t = 0; s == CL_SUCCESS && t < len; t += page) {
            const size_t m = len - t < page ? len - t : page;
            clattn_tensor part = K;
            part.offset = t * D;
            part.dims[2] = m;
            for (size_t b = 0; b < B && s == CL_SUCCESS; b++) {
                size_t counts[2] = {0, 0};
                counts[b] = m;
                s = clattn_kv_cache_append(st[1].cache, g_queue, &part, &part, counts, 0, NULL, NULL);
            }
        }
        clFinish(g_queue);
        result r[2] = {{0}};
        for (int c = 0; c < 2; c++) {
            r[c].status = s;
            if (s == CL_SUCCESS)
                time_runs(decode_enqueue, &st[c], o, &r[c]);
        }
        if (r[0].status != CL_SUCCESS || r[1].status != CL_SUCCESS) {
            printf("%8zu  error: %s\n", len, clattn_status_name(r[0].status ? r[0].status : r[1].status));
            failures++;
        } else {
            const double gbs = (double)(2 * B * Hkv * len * row_bytes) / (r[1].median_ms * 1e-3) * 1e-9;
            printf("%8zu %16.3f %12.3f %14.3f %12.1f %14.1f\n", len, r[0].median_ms, r[1].median_ms,
                   r[1].median_ms / r[0].median_ms, gbs, g_bw > 0 ? 100.0 * gbs / g_bw : 0.0);
        }
        for (int c = 0; c < 2; c++)
            clattn_kv_cache_destroy(&st[c].cache);
        clReleaseMemObject(bk), clReleaseMemObject(bq), clReleaseMemObject(bo);
        free(hq);
    }
    return failures ? 1 : 0;
}

/* Continuous batching over a KV cache: B = 4 sequences holding 4096 tokens each after a step in
 * which sequence 0 appended a chunk of 256 tokens and the others one token each; the step's
 * attention as one launch (packed queries, cu_seqlens_q) against one call per sequence (the
 * same call with only that sequence's queries), on a contiguous and a paged cache. */
#define MX_B 4
typedef struct mixed_state {
    clattn_kv_cache *cache;
    clattn_tensor q, o;
    size_t cu[MX_B + 1], one[MX_B][MX_B + 1];
    int separate;
} mixed_state;

static clattn_status mixed_enqueue(void *s)
{
    mixed_state *st = s;
    clattn_kv_attend_params ap = clattn_kv_attend_params_default();
    ap.num_seqs = MX_B;
    clattn_status r = CL_SUCCESS;
    for (size_t b = 0; b < (st->separate ? MX_B : 1) && r == CL_SUCCESS; b++) {
        clattn_tensor q = st->q, o = st->o; /* separate: sequence b's rows */
        if (st->separate) {
            q.offset += st->cu[b] * q.strides[2], o.offset += st->cu[b] * o.strides[2];
            q.dims[2] = o.dims[2] = st->cu[b + 1] - st->cu[b];
        }
        ap.cu_seqlens_q = st->separate ? st->one[b] : st->cu;
        r = clattn_kv_cache_attend(st->cache, g_queue, &q, &o, &ap, 0, NULL, NULL);
    }
    return r;
}

static int run_mixed(const options *o, const clattn_device_info *info, size_t page)
{
    const size_t Hq = 32, Hkv = 8, D = 128, len = 4096, chunk = 256;
    const size_t step[MX_B] = {chunk, 1, 1, 1};
    mixed_state st = {0};
    for (size_t b = 0; b < MX_B; b++)
        st.cu[b + 1] = st.cu[b] + step[b];
    for (size_t b = 0; b < MX_B; b++) /* only sequence b's queries: the others get none */
        for (size_t i = 0; i <= MX_B; i++)
            st.one[b][i] = i <= b ? 0 : step[b];
    const size_t total = st.cu[MX_B];
    float *h = tool_random_floats(MX_B * Hkv * len * D, 7, 1.0f), *hq = tool_random_floats(Hq * total * D, 8, 1.0f);
    cl_mem bk = upload(h, MX_B * Hkv * len * D), bq = upload(hq, Hq * total * D),
           bo = upload(hq, Hq * total * D);
    st.q = clattn_tensor_bhtd(bq, 0, 1, Hq, total, D);
    st.o = clattn_tensor_bhtd(bo, 0, 1, Hq, total, D);
    printf("mixed step: sequence 0 prefills %zu tokens, 3 others decode one, each holding %zu after "
           "it; Hq = %zu, Hkv = %zu, D = %zu, f32, on %s\n", chunk, len, Hq, Hkv, D, info->name);
    printf("%-12s %14s %20s %10s\n", "cache", "one launch ms", "one call per seq ms", "ratio");
    int failures = 0;
    for (int paged = 0; paged < 2; paged++) {
        clattn_kv_cache_params cp = clattn_kv_cache_params_default();
        cp.batch = MX_B, cp.num_kv_heads = Hkv, cp.head_dim = D, cp.capacity = len;
        if (paged)
            cp.page_size = page, cp.num_pages = MX_B * ((len + page - 1) / page);
        clattn_status s = clattn_kv_cache_create(g_cc, &cp, &st.cache);
        const clattn_tensor K = clattn_tensor_bhtd(bk, 0, MX_B, Hkv, len, D);
        if (s == CL_SUCCESS)
            s = clattn_kv_cache_append(st.cache, g_queue, &K, &K, NULL, 0, NULL, NULL);
        clFinish(g_queue);
        result r[2] = {{0}};
        for (int k = 0; k < 2; k++) {
            st.separate = k;
            r[k].status = s;
            if (s == CL_SUCCESS)
                time_runs(mixed_enqueue, &st, o, &r[k]);
        }
        if (r[0].status != CL_SUCCESS || r[1].status != CL_SUCCESS) {
            printf("%-12s error: %s\n", paged ? "paged" : "contiguous",
                   clattn_status_name(r[0].status ? r[0].status : r[1].status));
            failures++;
        } else {
            printf("%-12s %14.3f %20.3f %10.3f\n", paged ? "paged" : "contiguous", r[0].median_ms,
                   r[1].median_ms, r[0].median_ms / r[1].median_ms);
        }
        clattn_kv_cache_destroy(&st.cache);
    }
    clReleaseMemObject(bk), clReleaseMemObject(bq), clReleaseMemObject(bo);
    free(h), free(hq);
    return failures ? 1 : 0;
}

/* --- the device's fp32 peak ------------------------------------------------------------------ */

/* Twelve independent fma chains per work-item (enough to hide FMA latency), VEC lanes each: the
 * same idea as clpeak's compute test. The best of the vector widths is the peak. */
static const char *peak_source =
    "#define CAT2(a, b) a##b\n"
    "#define CAT(a, b) CAT2(a, b)\n"
    "#if VEC == 1\n#define T float\n#else\n#define T CAT(float, VEC)\n#endif\n"
    "__kernel void peak(__global float *out, int iters, float b, float c) {\n"
    "  T x0 = (T)(get_global_id(0) * 1e-7f), x1 = x0 + 1e-3f, x2 = x0 + 2e-3f, x3 = x0 + 3e-3f;\n"
    "  T x4 = x0 + 4e-3f, x5 = x0 + 5e-3f, x6 = x0 + 6e-3f, x7 = x0 + 7e-3f;\n"
    "  T x8 = x0 + 8e-3f, x9 = x0 + 9e-3f, x10 = x0 + 1e-2f, x11 = x0 + 1.1e-2f;\n"
    "  for (int i = 0; i < iters; i++) {\n"
    "    x0 = fma(x0, b, c); x1 = fma(x1, b, c); x2 = fma(x2, b, c); x3 = fma(x3, b, c);\n"
    "    x4 = fma(x4, b, c); x5 = fma(x5, b, c); x6 = fma(x6, b, c); x7 = fma(x7, b, c);\n"
    "    x8 = fma(x8, b, c); x9 = fma(x9, b, c); x10 = fma(x10, b, c); x11 = fma(x11, b, c);\n"
    "  }\n"
    "  T s = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8 + x9 + x10 + x11;\n"
    "  float r = 0.0f;\n"
    "  for (int k = 0; k < VEC; k++) r += ((float *)&s)[k];\n"
    "  out[get_global_id(0)] = r;\n"
    "}\n";

/* Measured fp32 peak in GFLOP/s (0 on failure); prints one line per vector width. */
/* Kernel `name` of the tool's own `source`, built with `opts` for the device (its program in
 * *prog), or NULL (and *prog NULL) when it does not build. */
static cl_kernel build_kernel(const char *source, const char *opts, const char *name,
                              cl_program *prog)
{
    cl_int err;
    *prog = clCreateProgramWithSource(g_context, 1, &source, NULL, &err);
    cl_kernel k = NULL;
    if (err == CL_SUCCESS && clBuildProgram(*prog, 1, &g_device, opts, NULL, NULL) == CL_SUCCESS)
        k = clCreateKernel(*prog, name, &err);
    if (!k && *prog) {
        clReleaseProgram(*prog);
        *prog = NULL;
    }
    return k;
}

static double measure_peak(const clattn_device_info *info, bool verbose)
{
    static const int widths[] = {1, 4, 8, 16};
    double best = 0.0;
    const bool cpu = (info->type & CL_DEVICE_TYPE_CPU) != 0;
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++) {
        cl_int err;
        char opts[64];
        snprintf(opts, sizeof opts, "-DVEC=%d", widths[w]);
        cl_program prog;
        cl_kernel k = build_kernel(peak_source, opts, "peak", &prog);
        if (!k)
            continue;
        /* CPUs: a few long work-items per core. GPUs: many work-items. */
        size_t global = cpu ? (size_t)info->compute_units * 4 : (size_t)info->compute_units * 4096;
        cl_mem out = clCreateBuffer(g_context, CL_MEM_WRITE_ONLY, global * sizeof(float), NULL, &err);
        float b = 0.999f, c = 1e-4f;
        int iters = 1024;
        double secs = 0;
        for (;;) {
            clSetKernelArg(k, 0, sizeof out, &out);
            clSetKernelArg(k, 1, sizeof iters, &iters);
            clSetKernelArg(k, 2, sizeof b, &b);
            clSetKernelArg(k, 3, sizeof c, &c);
            double t0 = tool_now();
            /* On CPUs one work-item per work-group, so that every core gets work-groups. */
            const size_t one = 1;
            err = clEnqueueNDRangeKernel(g_queue, k, 1, NULL, &global, cpu ? &one : NULL, 0, NULL, NULL);
            clFinish(g_queue);
            secs = tool_now() - t0;
            if (err != CL_SUCCESS || secs > 0.25 || iters > (1 << 28))
                break;
            iters *= 4;
        }
        double gflops = err == CL_SUCCESS ? 2.0 * 12.0 * widths[w] * (double)iters * (double)global / secs * 1e-9 : 0;
        if (verbose)
            printf("  float%-2d x 12 fma chains: %8.1f GFLOP/s\n", widths[w], gflops);
        if (gflops > best)
            best = gflops;
        clReleaseMemObject(out);
        clReleaseKernel(k);
        clReleaseProgram(prog);
    }
    return best;
}

/* --- the device's read bandwidth ------------------------------------------------------------ */

/* Each work-item sums `per` VEC-wide elements into four independent accumulators (so the adds'
 * latency does not bound it) and writes one float, so that no load is optimised away. CPUs
 * (CHUNKED): work-item i sums a contiguous chunk, one prefetchable stream each; GPUs: work-item
 * i reads i, i + global, ..., so neighbouring work-items' loads coalesce. */
static const char *bw_source =
    "#define CAT2(a, b) a##b\n"
    "#define CAT(a, b) CAT2(a, b)\n"
    "#define T CAT(float, VEC)\n"
    "__kernel void bw(__global const T *in, __global float *out, uint per) {\n"
    "#ifdef CHUNKED\n"
    "  const size_t step = 1; __global const T *p = in + get_global_id(0) * per;\n"
    "#else\n"
    "  const size_t step = get_global_size(0); __global const T *p = in + get_global_id(0);\n"
    "#endif\n"
    "  T a0 = (T)(0.0f), a1 = a0, a2 = a0, a3 = a0;\n"
    "  for (uint i = 0; i < per; i += 4, p += 4 * step) {\n"
    "    a0 += p[0]; a1 += p[step]; a2 += p[2 * step]; a3 += p[3 * step];\n"
    "  }\n"
    "  T s = a0 + a1 + a2 + a3;\n"
    "  float r = 0.0f;\n"
    "  for (int k = 0; k < VEC; k++) r += ((float *)&s)[k];\n"
    "  out[get_global_id(0)] = r;\n"
    "}\n";

/* Measured global-memory read bandwidth in GB/s (0 on failure): the best vector width's median
 * of 5 timed passes over a buffer of up to 1 GiB (larger than the last-level cache: this
 * machine's L3 is 480 MiB). Prints one line per width when verbose. */
static double measure_bandwidth(const clattn_device_info *info, bool verbose)
{
    static const int widths[] = {4, 8, 16};
    const bool cpu = (info->type & CL_DEVICE_TYPE_CPU) != 0;
    size_t bytes = (size_t)1 << 30;
    if (bytes > info->max_mem_alloc_size)
        bytes = (size_t)info->max_mem_alloc_size;
    if (bytes > info->global_mem_size / 4)
        bytes = (size_t)(info->global_mem_size / 4);
    bytes &= ~(size_t)63;
    /* CPUs: a few work-items per core, one per work-group as measure_peak does. GPUs: enough
     * work-items to keep every core's loads in flight. */
    const size_t global = (size_t)info->compute_units * (cpu ? 4 : 1024), one = 1;
    cl_int err;
    cl_mem in = clCreateBuffer(g_context, CL_MEM_READ_ONLY, bytes ? bytes : 1, NULL, &err);
    cl_mem out = clCreateBuffer(g_context, CL_MEM_WRITE_ONLY, global * sizeof(float), NULL, &err);
    /* Written once, so that the pages exist (untouched ones may all map one zero page). */
    const float fill = 1.0f;
    err = clEnqueueFillBuffer(g_queue, in, &fill, sizeof fill, 0, bytes, 0, NULL, NULL);
    clFinish(g_queue);
    double best = 0.0;
    for (size_t w = 0; err == CL_SUCCESS && w < sizeof widths / sizeof widths[0]; w++) {
        char opts[64];
        snprintf(opts, sizeof opts, "-DVEC=%d%s", widths[w], cpu ? " -DCHUNKED" : "");
        cl_program prog;
        cl_kernel k = build_kernel(bw_source, opts, "bw", &prog);
        if (!k)
            continue;
        const cl_uint per = (cl_uint)(bytes / (4 * (size_t)widths[w]) / global) & ~3u;
        clSetKernelArg(k, 0, sizeof in, &in);
        clSetKernelArg(k, 1, sizeof out, &out);
        clSetKernelArg(k, 2, sizeof per, &per);
        /* One warm-up pass, timed to choose how many passes a sample enqueues back to back: at
         * least 30 ms' worth, so that a fast GPU's launch overhead does not count. */
        double t0 = tool_now(), t[5];
        err = clEnqueueNDRangeKernel(g_queue, k, 1, NULL, &global, cpu ? &one : NULL, 0, NULL, NULL);
        clFinish(g_queue);
        const double warm = tool_now() - t0;
        const int passes = warm >= 0.03 ? 1 : warm * 100 < 0.03 ? 100 : (int)(0.03 / warm) + 1;
        for (int i = 0; i < 5 && err == CL_SUCCESS; i++) {
            t0 = tool_now();
            for (int j = 0; j < passes && err == CL_SUCCESS; j++)
                err = clEnqueueNDRangeKernel(g_queue, k, 1, NULL, &global, cpu ? &one : NULL, 0, NULL, NULL);
            clFinish(g_queue);
            t[i] = (tool_now() - t0) / passes;
        }
        const double gbs = err == CL_SUCCESS ? (double)global * per * widths[w] * 4.0 / tool_median(t, 5) * 1e-9 : 0;
        if (verbose)
            printf("  float%-2d reads: %8.1f GB/s\n", widths[w], gbs);
        best = gbs > best ? gbs : best;
        clReleaseKernel(k);
        clReleaseProgram(prog);
    }
    clReleaseMemObject(in);
    clReleaseMemObject(out);
    return best;
}

/* --- a model's cold start ---------------------------------------------------------------------- */

/* A start-up run as JSON (one row, in an array like the other modes'): `what` is the mode,
 * `count` the kernel files (--startup) or programs (--startup-llama) made ready. Whether the
 * caches were cold is up to the caller, who chose CLATTN_CACHE_DIR and POCL_CACHE_DIR. */
static int startup_json(const char *json, const char *what, const clattn_context *cc,
                        double ctx_s, double ready_s, int count)
{
    clattn_device_info info = {0};
    FILE *f;
    if (!json_open(json, &f))
        return 1;
    if (!f)
        return 0;
    clattn_context_device_info(cc, &info);
    fprintf(f, "  {\"suite\": \"%s\", \"device\": \"%s\", \"context_ms\": %.3f, "
               "\"ready_ms\": %.3f, \"total_ms\": %.3f, \"count\": %d}\n]\n",
            what, info.name, 1e3 * ctx_s, 1e3 * ready_s, 1e3 * (ctx_s + ready_s), count);
    fclose(f);
    return 0;
}

static void count_programs(void *user, clattn_log_level level, const char *msg)
{
    (void)level;
    if (strncmp(msg, "clattn: program ", 16) == 0) {
        ++*(int *)user;
        printf("  %s\n", msg + 8);
    }
}

/* From nothing to every kernel a Llama-style decoder runs (Llama 3 8B's dims: E = 4096, 32
 * query heads over 8 kv heads of 128, RoPE in the KV cache) ready: its projections for a prompt
 * chunk and for single tokens, the cache's appends and attention for both. Run with empty
 * CLATTN_CACHE_DIR and POCL_CACHE_DIR for a cold start, then again for a warm one. */
static int startup_llama(const char *json)
{
    int programs = 0;
    const double t0 = tool_now();
    clattn_context_params cp = clattn_context_params_default();
    cp.log = count_programs;
    cp.log_user = &programs;
    cp.log_level = CLATTN_LOG_DEBUG;
    clattn_context *cc = NULL;
    clattn_status st = clattn_context_create(&cp, &cc);
    if (st != CL_SUCCESS)
        die("clattn_context_create", st);
    const double t1 = tool_now();
    enum { E = 4096, HQ = 32, HKV = 8, D = 128, CHUNK = 512 };
    cl_int err;
    cl_mem any = clCreateBuffer(clattn_context_cl_context(cc), CL_MEM_READ_WRITE,
                                (size_t)E * E * sizeof(float), NULL, &err);
    if (err != CL_SUCCESS)
        die("clCreateBuffer", err);
    clattn_rope_params rp = clattn_rope_params_default();
    rp.theta = 500000.0f;
    clattn_kv_cache_params kp = clattn_kv_cache_params_default();
    kp.batch = 1, kp.num_kv_heads = HKV, kp.head_dim = D, kp.capacity = 8192, kp.rope = &rp;
    clattn_kv_cache *kv = NULL;
    st = clattn_kv_cache_create(cc, &kp, &kv);
    for (size_t t = 1; st == CL_SUCCESS && t <= CHUNK; t += CHUNK - 1) {
        const clattn_tensor X = clattn_tensor_bhtd(any, 0, 1, 1, t, E);
        const clattn_tensor Wq = clattn_tensor_bhtd(any, 0, 1, 1, E, E);
        const clattn_tensor Wkv = clattn_tensor_bhtd(any, 0, 1, 1, HKV * D, E);
        const clattn_tensor Yq = clattn_tensor_bhtd(any, 0, 1, 1, t, E);
        const clattn_tensor Ykv = clattn_tensor_bhtd(any, 0, 1, 1, t, HKV * D);
        const clattn_tensor Q = clattn_tensor_bthd(any, 0, 1, t, HQ, D);
        if ((st = clattn_linear_prepare(cc, &X, &Wq, NULL, &Yq)) == CL_SUCCESS &&
            (st = clattn_linear_prepare(cc, &X, &Wkv, NULL, &Ykv)) == CL_SUCCESS)
            st = clattn_kv_cache_prepare(kv, &Q, &Q, NULL);
    }
    const double t2 = tool_now();
    if (st != CL_SUCCESS)
        die("prepare", st);
    const char *cache = getenv("CLATTN_CACHE_DIR");
    printf("startup-llama: context %.1f ms; %d programs ready %.1f ms after it; %.1f ms in all "
           "(CLATTN_CACHE_DIR=%s)\n", 1e3 * (t1 - t0), programs, 1e3 * (t2 - t1), 1e3 * (t2 - t0),
           cache ? cache : "(default)");
    const int rc = startup_json(json, "startup-llama", cc, t1 - t0, t2 - t1, programs);
    clattn_kv_cache_destroy(&kv);
    clReleaseMemObject(any);
    clattn_context_destroy(&cc);
    return rc;
}

/* --- main ------------------------------------------------------------------------------------ */

static void usage(void)
{
    printf(
        "usage: clattn-bench [options]\n"
        "  With no shape options: the default suite (GPT-2 small, BERT-base, a GQA decoder layer).\n"
        "  --op sdpa|mha|both     what to time (default both)\n"
        "  -b, --batch N          batch size (default 1)\n"
        "  -H, --heads N          query heads (default 8)\n"
        "      --kv-heads N       key/value heads (default = heads)\n"
        "  -T, --seq N            Lq = Lk = N\n"
        "      --lq N, --lk N     query / key lengths (default 512)\n"
        "  -d, --head-dim N       head dim (default 64)\n"
        "      --causal[=top-left|bottom-right]\n"
        "      --path auto|unfused|fused\n"
        "      --window N         sdpa: a sliding window of N keys ending at each query\n"
        "      --softcap X        sdpa: logit soft-capping at X\n"
        "      --alibi, --sinks   sdpa: ALiBi's standard slopes; a sink logit per head\n"
        "      --warmup N         untimed runs first (default 2)\n"
        "      --reps N           timed runs, at least 3 (default 10; fewer past --max-seconds)\n"
        "      --max-seconds S    time budget per row (default 10)\n"
        "      --check            compare with the double-precision reference (batch item 0)\n"
        "      --json FILE        also write the rows as JSON (--decode, --startup and\n"
        "                         --startup-llama too)\n"
        "      --device SPEC      as CLATTN_DEVICE: P:D indices or a piece of the device name\n"
        "      --suite models|flash|gemm|variants  models (default): GPT-2 small, BERT-base, a GQA\n"
        "                         decoder layer; gemm: their projections (clattn_linear_prepared);\n"
        "                         flash: sdpa fused vs unfused, T = 1024..8192, D = 64,\n"
        "                         causal and not, then T = 65536 on both paths; variants: each\n"
        "                         model variant next to plain causal attention (D = 64, 128),\n"
        "                         and a 2048-key window at T = 16384\n"
        "      --peak             measure the device's fp32 peak first (FMA-bound kernel) and\n"
        "                         its read bandwidth, and report every row as a share of the peak\n"
        "      --bandwidth        measure the device's global-memory read bandwidth (a large\n"
        "                         buffer summed with vector loads), print it and stop (after\n"
        "                         the peak, with --peak)\n"
        "      --startup          time a new context until every kernel is ready (run twice:\n"
        "                         cold, then warm from the disk cache)\n"
        "      --startup-llama    time a new context until everything a Llama-style decoder\n"
        "                         runs is ready (causal, RoPE, GQA, a KV cache; 8B's dims),\n"
        "                         and count the programs built\n"
        "      --varlen           a packed batch of 17, 90, 512 and 1024 tokens: one call, one\n"
        "                         call per sequence, and the batch padded with key lengths\n"
        "      --decode           decode-step time over a KV cache of 1k..32k tokens, split-KV\n"
        "                         off and automatic\n"
        "      --kv-dtype f32|f16|bf16|q8  the decode cache's storage (default f32; q8: int8\n"
        "                         rows with a float scale each); its K+V GB/s is reported as a\n"
        "                         share of the read bandwidth, measured first\n"
        "      --page-size N      with --decode: a paged cache (pages of N tokens) against a\n"
        "                         contiguous one, two sequences of 4k..32k tokens\n"
        "      --mixed            a continuous-batching step over a KV cache (one sequence\n"
        "                         prefilling a chunk, three decoding) in one launch and one\n"
        "                         call per sequence, contiguous and paged (--page-size, 16)\n"
        "      --host-time        time each call only until it returns (its work enqueued):\n"
        "                         the host's cost per call, not the device's\n"
        "      --layer-scratch    mha forwards without a workspace (the layer's kept scratch)\n"
        "");
    printf("%s",
        "      --mpi-ring[=LAYOUT] under mpirun: ring attention (clattn_mpi) over the ranks,\n"
        "                         LAYOUT contiguous (default), zigzag or striped; -T (default\n"
        "                         262144), -H (1), -d (64), --causal (on without a shape);\n"
        "                         time, memory per rank against one process, bytes sent and\n"
        "                         the share of time waiting on communication\n"
        "      --demo             show scores, mask and softmax for an 8-token sentence\n");
}

int main(int argc, char **argv)
{
    options o = {2, 10, 10.0, false, false, false};
    const char *json = NULL, *op = "both";
    shape custom = {"custom", "sdpa", 1, 8, 0, 512, 512, 64, 0, CLATTN_PATH_AUTO, NO_VARIANT};
    bool have_shape = false, do_demo = false, do_peak = false, do_startup = false, do_decode = false,
         do_varlen = false,
         do_startup_llama = false, do_bw = false;
    clattn_dtype kv_dtype = CLATTN_F32;
    size_t page_size = 0;
    bool do_mixed = false;
    const char *mpi_layout = NULL; /* --mpi-ring's layout: run under mpirun */
    const char *suite_name = "models";
    enum { O_KV = 1000, O_LQ, O_LK, O_CAUSAL, O_PATH, O_WARMUP, O_REPS, O_MAXS, O_CHECK, O_JSON,
           O_DEVICE, O_DEMO, O_OP, O_SUITE, O_PEAK, O_STARTUP, O_DECODE, O_VARLEN, O_HOST_TIME,
           O_LAYER_SCRATCH, O_WINDOW, O_SOFTCAP, O_ALIBI, O_SINKS, O_STARTUP_LLAMA, O_KV_DTYPE, O_PAGE_SIZE, O_MIXED,
           O_BANDWIDTH, O_MPI_RING };
    static const struct option longopts[] = {
        {"op", required_argument, 0, O_OP},         {"batch", required_argument, 0, 'b'},
        {"heads", required_argument, 0, 'H'},       {"kv-heads", required_argument, 0, O_KV},
        {"seq", required_argument, 0, 'T'},         {"lq", required_argument, 0, O_LQ},
        {"lk", required_argument, 0, O_LK},         {"head-dim", required_argument, 0, 'd'},
        {"causal", optional_argument, 0, O_CAUSAL}, {"path", required_argument, 0, O_PATH},
        {"warmup", required_argument, 0, O_WARMUP}, {"reps", required_argument, 0, O_REPS},
        {"max-seconds", required_argument, 0, O_MAXS}, {"check", no_argument, 0, O_CHECK},
        {"json", required_argument, 0, O_JSON},     {"device", required_argument, 0, O_DEVICE},
        {"demo", no_argument, 0, O_DEMO},           {"help", no_argument, 0, 'h'},
        {"suite", required_argument, 0, O_SUITE},   {"peak", no_argument, 0, O_PEAK},
        {"startup", no_argument, 0, O_STARTUP},     {"decode", no_argument, 0, O_DECODE},
        {"varlen", no_argument, 0, O_VARLEN},
        {"host-time", no_argument, 0, O_HOST_TIME}, {"layer-scratch", no_argument, 0, O_LAYER_SCRATCH},
        {"window", required_argument, 0, O_WINDOW}, {"softcap", required_argument, 0, O_SOFTCAP},
        {"alibi", no_argument, 0, O_ALIBI},         {"sinks", no_argument, 0, O_SINKS},
        {"startup-llama", no_argument, 0, O_STARTUP_LLAMA},
        {"kv-dtype", required_argument, 0, O_KV_DTYPE},
        {"page-size", required_argument, 0, O_PAGE_SIZE},
        {"mixed", no_argument, 0, O_MIXED},
        {"bandwidth", no_argument, 0, O_BANDWIDTH},
        {"mpi-ring", optional_argument, 0, O_MPI_RING},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "b:H:T:d:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'b': custom.B = strtoul(optarg, NULL, 10); have_shape = true; break;
        case 'H': custom.H = strtoul(optarg, NULL, 10); have_shape = true; break;
        case O_KV: custom.Hkv = strtoul(optarg, NULL, 10); have_shape = true; break;
        case 'T': custom.Lq = custom.Lk = strtoul(optarg, NULL, 10); have_shape = true; break;
        case O_LQ: custom.Lq = strtoul(optarg, NULL, 10); have_shape = true; break;
        case O_LK: custom.Lk = strtoul(optarg, NULL, 10); have_shape = true; break;
        case 'd': custom.D = strtoul(optarg, NULL, 10); have_shape = true; break;
        case O_CAUSAL:
            custom.causal = optarg && strcmp(optarg, "bottom-right") == 0 ? 2 : 1;
            have_shape = true;
            break;
        case O_PATH:
            custom.path = strcmp(optarg, "unfused") == 0 ? CLATTN_PATH_UNFUSED
                          : strcmp(optarg, "fused") == 0 ? CLATTN_PATH_FUSED
                                                         : CLATTN_PATH_AUTO;
            break;
        case O_WARMUP: o.warmup = atoi(optarg); break;
        case O_REPS: o.reps = atoi(optarg); break;
        case O_MAXS: o.max_seconds = atof(optarg); break;
        case O_CHECK: o.check = true; break;
        case O_JSON: json = optarg; break;
        case O_DEVICE: setenv("CLATTN_DEVICE", optarg, 1); break;
        case O_DEMO: do_demo = true; break;
        case O_OP: op = optarg; break;
        case O_SUITE: suite_name = optarg; break;
        case O_PEAK: do_peak = true; break;
        case O_BANDWIDTH: do_bw = true; break;
        case O_STARTUP: do_startup = true; break;
        case O_DECODE: do_decode = true; break;
        case O_VARLEN: do_varlen = true; break;
        case O_PAGE_SIZE: page_size = (size_t)strtoull(optarg, NULL, 10); break;
        case O_MIXED: do_mixed = true; break;
        case O_MPI_RING: mpi_layout = optarg ? optarg : "contiguous"; break;
        case O_KV_DTYPE:
            kv_dtype = strcmp(optarg, "f32") == 0    ? CLATTN_F32
                       : strcmp(optarg, "f16") == 0  ? CLATTN_F16
                       : strcmp(optarg, "bf16") == 0 ? CLATTN_BF16
                       : strcmp(optarg, "q8") == 0   ? CLATTN_Q8
                                                     : 0;
            if (!kv_dtype) {
                usage();
                return 2;
            }
            break;
        case O_HOST_TIME: o.host_time = true; break;
        case O_LAYER_SCRATCH: o.layer_scratch = true; break;
        case O_WINDOW: custom.window = strtoul(optarg, NULL, 10); have_shape = true; break;
        case O_SOFTCAP: custom.softcap = strtof(optarg, NULL); have_shape = true; break;
        case O_ALIBI: custom.alibi = true; have_shape = true; break;
        case O_SINKS: custom.sinks = true; have_shape = true; break;
        case O_STARTUP_LLAMA: do_startup_llama = true; break;
        case 'h': usage(); return 0;
        default: usage(); return 2;
        }
    }
    if (strcmp(op, "sdpa") != 0 && strcmp(op, "mha") != 0 && strcmp(op, "both") != 0) {
        usage();
        return 2;
    }
    if (custom.Hkv == 0)
        custom.Hkv = custom.H;
    if (do_startup_llama)
        return startup_llama(json);
    if (mpi_layout) {
#ifdef CLATTN_BENCH_MPI
        return bench_mpi_ring(&argc, &argv, have_shape ? custom.Lq : 262144,
                              have_shape ? custom.H : 1, have_shape ? custom.D : 64,
                              custom.causal != 0 || !have_shape, mpi_layout, o.reps < 3 ? o.reps : 3);
#else
        fprintf(stderr, "clattn-bench: built without MPI (-Dmpi)\n");
        return 2;
#endif
    }

    if (do_startup) {
        /* From nothing to every kernel ready: context, device queries, each kernel file built
         * or loaded from the disk cache. */
        double t0 = tool_now();
        clattn_status st0 = clattn_context_create(NULL, &g_cc);
        double t1 = tool_now();
        for (size_t k = 0; st0 == CL_SUCCESS && k < clattn_kernel_count(); k++)
            st0 = clattn_kernel_build(g_cc, clattn_kernel_name(k));
        double t2 = tool_now();
        if (st0 != CL_SUCCESS)
            die("startup", st0);
        const char *cache = getenv("CLATTN_CACHE_DIR");
        printf("startup: context %.1f ms, all %zu kernels ready %.1f ms after it, %.1f ms in all "
               "(CLATTN_CACHE_DIR=%s)\n", 1e3 * (t1 - t0), clattn_kernel_count(), 1e3 * (t2 - t1),
               1e3 * (t2 - t0), cache ? cache : "(default)");
        const int rc = startup_json(json, "startup", g_cc, t1 - t0, t2 - t1, (int)clattn_kernel_count());
        clattn_context_destroy(&g_cc);
        return rc;
    }
    clattn_status st = clattn_context_create(NULL, &g_cc);
    if (st != CL_SUCCESS)
        die("clattn_context_create", st);
    g_context = clattn_context_cl_context(g_cc);
    g_device = clattn_context_cl_device(g_cc);
    cl_int err;
    g_queue = clCreateCommandQueue(g_context, g_device, 0, &err);
    if (err != CL_SUCCESS)
        die("clCreateCommandQueue", err);
    clattn_device_info info;
    clattn_context_device_info(g_cc, &info);
    if (do_varlen) {
        int rc = run_varlen(&o, &info);
        clReleaseCommandQueue(g_queue);
        clattn_context_destroy(&g_cc);
        return rc;
    }
    if (do_mixed) {
        int rc = run_mixed(&o, &info, page_size ? page_size : 16);
        clReleaseCommandQueue(g_queue);
        clattn_context_destroy(&g_cc);
        return rc;
    }
    if (do_decode) {
        int rc = page_size ? run_paged(&o, &info, kv_dtype, page_size)
                           : run_decode(&o, &info, kv_dtype, json);
        clReleaseCommandQueue(g_queue);
        clattn_context_destroy(&g_cc);
        return rc;
    }
    if (do_demo) {
        int rc = demo();
        clReleaseCommandQueue(g_queue);
        clattn_context_destroy(&g_cc);
        return rc;
    }

    if (do_peak) {
        printf("fp32 peak of %s:\n", info.name);
        g_peak = measure_peak(&info, true);
        printf("peak: %.1f GFLOP/s\n", g_peak);
    }
    if (do_peak || do_bw) {
        printf("global-memory read bandwidth of %s:\n", info.name);
        g_bw = measure_bandwidth(&info, true);
        printf("read bandwidth: %.1f GB/s\n\n", g_bw);
    }
    if (do_bw) {
        clReleaseCommandQueue(g_queue);
        clattn_context_destroy(&g_cc);
        return g_bw > 0 ? 0 : 1;
    }
    if (!have_shape && strcmp(suite_name, "gemm") == 0) {
        int rc = run_gemm_suite(&o, &info);
        clReleaseCommandQueue(g_queue);
        clattn_context_destroy(&g_cc);
        return rc;
    }

    shape rows[32];
    size_t n = 0;
    if (have_shape) {
        rows[n] = custom;
        rows[n++].op = "sdpa";
        if (!has_variant(&custom)) { /* the layer's forward takes them, the bench does not */
            rows[n] = custom;
            rows[n++].op = "mha";
        }
    } else if (strcmp(suite_name, "variants") == 0) {
        /* Each variant right after plain causal attention of the same shape, on the fused path. */
        static const size_t Ds[] = {64, 128};
        for (size_t d = 0; d < 2; d++) {
            const shape plain = {"causal", "sdpa", 1, 8, 8, 4096, 4096, Ds[d], 1, CLATTN_PATH_FUSED, NO_VARIANT};
            shape v = plain;
            rows[n++] = plain;
            v.name = "alibi", v.alibi = true, rows[n++] = v, v.alibi = false;
            v.name = "sinks", v.sinks = true, rows[n++] = v, v.sinks = false;
            v.name = "softcap-50", v.softcap = 50.0f, rows[n++] = v;
            v.name = "softcap-1000", v.softcap = 1000.0f, rows[n++] = v; /* the exact tanh */
        }
        shape longer = {"causal", "sdpa", 1, 4, 4, 16384, 16384, 64, 1, CLATTN_PATH_FUSED, NO_VARIANT};
        rows[n++] = longer;
        longer.name = "window-2048", longer.window = 2048, rows[n++] = longer;
    } else if (strcmp(suite_name, "flash") == 0) {
        /* One head, so the unfused path's score matrix fits up to T = 8192 (256 MiB). */
        static const size_t Ts[] = {1024, 2048, 4096, 8192};
        for (size_t t = 0; t < sizeof Ts / sizeof Ts[0]; t++)
            for (int causal = 0; causal <= 1; causal++)
                for (int path = CLATTN_PATH_FUSED; path >= CLATTN_PATH_UNFUSED; path--) {
                    shape sh = {"flash", "sdpa", 1, 1, 1, Ts[t], Ts[t], 64, causal, (clattn_path)path, NO_VARIANT};
                    rows[n++] = sh;
                }
        shape longest = {"flash-64k", "sdpa", 1, 1, 1, 65536, 65536, 64, 1, CLATTN_PATH_FUSED, NO_VARIANT};
        rows[n++] = longest;
        longest.path = CLATTN_PATH_UNFUSED;
        rows[n++] = longest;
    } else if (strcmp(suite_name, "models") != 0) {
        usage();
        return 2;
    } else {
        static const shape suite[] = {
            {"gpt2-small", "sdpa", 1, 12, 12, 1024, 1024, 64, 1, CLATTN_PATH_AUTO, NO_VARIANT},
            {"gpt2-small", "mha", 1, 12, 12, 1024, 1024, 64, 1, CLATTN_PATH_AUTO, NO_VARIANT},
            {"bert-base", "sdpa", 8, 12, 12, 128, 128, 64, 0, CLATTN_PATH_AUTO, NO_VARIANT},
            {"bert-base", "mha", 8, 12, 12, 128, 128, 64, 0, CLATTN_PATH_AUTO, NO_VARIANT},
            {"gqa-decoder", "sdpa", 1, 32, 8, 2048, 2048, 128, 1, CLATTN_PATH_AUTO, NO_VARIANT},
            {"gqa-decoder", "mha", 1, 32, 8, 2048, 2048, 128, 1, CLATTN_PATH_AUTO, NO_VARIANT},
        };
        for (size_t i = 0; i < sizeof suite / sizeof suite[0]; i++)
            rows[n++] = suite[i];
    }
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(op, "both") == 0 || strcmp(op, rows[i].op) == 0)
            rows[kept++] = rows[i];
    n = kept;

    FILE *jf;
    if (!json_open(json, &jf))
        return 1;
    printf("clattn %s on %s (%s), %d warm-up run(s), median of up to %d runs\n", clattn_version(),
           info.name, info.platform_name, o.warmup, o.reps);
    print_header();
    int failures = 0;
    result results[32];
    for (size_t i = 0; i < n; i++) {
        fprintf(stderr, "\r[%zu/%zu] %s %s ...", i + 1, n, rows[i].name, rows[i].op);
        fflush(stderr);
        result r = strcmp(rows[i].op, "sdpa") == 0 ? run_sdpa(&rows[i], &o) : run_mha(&rows[i], &o);
        fprintf(stderr, "\r%*s\r", 60, "");
        print_row(&rows[i], &r);
        fflush(stdout);
        results[i] = r;
        /* A refused size on the unfused path is that path's documented answer, not a failure. */
        failures += r.status != CL_SUCCESS &&
                    !(rows[i].path == CLATTN_PATH_UNFUSED && r.status == CLATTN_ERROR_ALLOCATION_TOO_LARGE);
        if (jf)
            json_row(jf, &rows[i], &r, info.name, i == 0);
    }
    if (jf) {
        fprintf(jf, "\n]\n");
        fclose(jf);
    }
    if (!have_shape && strcmp(suite_name, "flash") == 0) {
        /* Rows come in (fused, unfused) pairs of one shape. */
        printf("\n%6s %-9s %12s %14s %10s%s\n", "T", "causal", "fused ms", "unfused ms", "speedup",
               g_peak > 0 ? "  fused % peak" : "");
        for (size_t i = 0; i + 1 < n; i += 2) {
            const result *f = &results[i], *u = &results[i + 1];
            if (f->status != CL_SUCCESS)
                continue;
            printf("%6zu %-9s %12.3f ", rows[i].Lq, causal_name(rows[i].causal), f->median_ms);
            if (u->status == CL_SUCCESS)
                printf("%14.3f %9.1fx", u->median_ms, u->median_ms / f->median_ms);
            else
                printf("%14s %10s", "refused", "-");
            if (g_peak > 0)
                printf("  %13.1f", 100.0 * f->gflops / g_peak);
            printf("\n");
        }
    }
    if (!have_shape && strcmp(suite_name, "variants") == 0) {
        printf("\n%-12s %6s %4s %12s %12s %8s\n", "variant", "T", "D", "ms", "causal ms",
               "ratio");
        const result *plain = NULL;
        for (size_t i = 0; i < n; i++) {
            if (!has_variant(&rows[i])) {
                plain = &results[i];
                continue;
            }
            if (!plain || plain->status != CL_SUCCESS || results[i].status != CL_SUCCESS)
                continue;
            printf("%-12s %6zu %4zu %12.3f %12.3f %8.3f\n", rows[i].name, rows[i].Lq, rows[i].D,
                   results[i].median_ms, plain->median_ms, results[i].median_ms / plain->median_ms);
        }
        printf("ratio: the variant's time over plain causal attention's, same shape, same run.\n");
    }
    printf("GFLOP/s counts useful work only: 4·D flops per visible query-key pair, plus the\n"
           "projections for mha. lib MiB: device memory for intermediates (sdpa: what clattn\n"
           "allocates; mha: the workspace the program gives each forward, or with --layer-scratch\n"
           "the scratch the layer keeps).\n");
    clReleaseCommandQueue(g_queue);
    clattn_context_destroy(&g_cc);
    return failures ? 1 : 0;
}
