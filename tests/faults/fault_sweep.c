/* The fault sweep: each case is one representative call (or short sequence of calls) of the
 * public API, run with tests/faults/interpose.c preloaded. A run without faults counts the
 * OpenCL calls and host allocations that libclattn's own code makes; then, for each of those
 * points (all of them, or every FAULT_EVERY-th from FAULT_OFFSET), the call is run again with that
 * one failing, and:
 *
 *  - a call that returns an error has left *event_out as it was;
 *  - every input buffer is bit-identical, and so is every output unless a command that may write
 *    one was already enqueued (then the header allows the call's own outputs to have changed);
 *  - a call that returns success despite the fault (one the library may survive: a callback it
 *    could not set, a look at an event) gives the same bits as the run that never failed;
 *  - the failed call repeated without a fault, on the state it left (a KV cache's lengths, a
 *    layer's scratch, the context's caches), succeeds and matches that run bit for bit;
 *  - libclattn's balance of OpenCL objects (created and retained, minus released) is what it was
 *    before the point, once the work has ended: nothing leaked, nothing released twice.
 *
 * Every failure is printed with the point's number and the call that failed. */
#define _GNU_SOURCE
#include "harness.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Setups: the products on clattn's own engine, and on CLBlast (lanes and gates). */
#define SETUPS "auto-clattn auto-clblast"

enum { B = 2, H = 4, HKV = 2, T = 19, TK = 23, D = 16, E = H * D };
enum { OBJ_N = 7 };
enum { FAULT_CL = 1, FAULT_ALLOC = 2 };

/* ---- The interposer's controls ------------------------------------------------------------ */

static void (*f_arm)(int kinds, long at);
static long (*f_disarm)(void);
static const char *(*f_failed)(void);
static int (*f_enqueued)(void);
static long (*f_balance)(int type);
static void (*f_handed)(int type);

static bool controls(void)
{
    *(void **)&f_arm = dlsym(RTLD_DEFAULT, "fault_arm");
    *(void **)&f_disarm = dlsym(RTLD_DEFAULT, "fault_disarm");
    *(void **)&f_failed = dlsym(RTLD_DEFAULT, "fault_failed");
    *(void **)&f_enqueued = dlsym(RTLD_DEFAULT, "fault_enqueued");
    *(void **)&f_balance = dlsym(RTLD_DEFAULT, "fault_balance");
    *(void **)&f_handed = dlsym(RTLD_DEFAULT, "fault_handed");
    if (!f_arm || !f_disarm || !f_failed || !f_enqueued || !f_balance || !f_handed) {
        fprintf(stderr, "the fault interposer is not loaded (LD_PRELOAD=.../libfaultinject.so)\n");
        return false;
    }
    return true;
}

/* ---- Buffers ------------------------------------------------------------------------------- */

enum buf_id {
    /* inputs */
    IN_Q, IN_K, IN_V, IN_KX, IN_VX, IN_X, IN_XK, IN_W, IN_BIAS, IN_WQKV, IN_BQKV, IN_WO, IN_BO,
    IN_O1, IN_L1, IN_O2, IN_L2, IN_KN, IN_VN, IN_QD, IN_SLOPES, IN_SINKS,
    /* outputs */
    OUT_O, OUT_LSE, OUT_P, OUT_Y, OUT_XO, OUT_HW, OUT_M, OUT_ML,
    NBUF
};
static const size_t buf_elems[NBUF] = {
    [IN_Q] = B * H * T * D,     [IN_K] = B * HKV * T * D,  [IN_V] = B * HKV * T * D,
    [IN_KX] = B * HKV * TK * D, [IN_VX] = B * HKV * TK * D, [IN_X] = B * T * E,
    [IN_XK] = B * TK * E,       [IN_W] = E * E,            [IN_BIAS] = E,
    [IN_WQKV] = 3 * E * E,      [IN_BQKV] = 3 * E,         [IN_WO] = E * E,
    [IN_BO] = E,                [IN_O1] = B * H * T * D,   [IN_L1] = B * H * T,
    [IN_O2] = B * H * T * D,    [IN_L2] = B * H * T,       [IN_KN] = B * HKV * 3 * D,
    [IN_VN] = B * HKV * 3 * D,  [IN_QD] = B * H * 3 * D,    [IN_SLOPES] = H,
    [IN_SINKS] = H,
    [OUT_O] = B * H * T * D,    [OUT_LSE] = B * H * T,     [OUT_P] = B * H * T * TK,
    [OUT_Y] = B * T * E,        [OUT_XO] = B * T * E,      [OUT_HW] = B * H * T * TK,
    [OUT_M] = B * H * T * D,    [OUT_ML] = B * H * T,
};
#define FIRST_OUT OUT_O

typedef struct sweep {
    test_env e;
    cl_mem buf[NBUF];
    float *initial[NBUF]; /* inputs' random values, outputs' sentinel */
    clattn_context *cc;   /* the case's context (the setup's engine) */
    clattn_mha *mha, *mha_cross;
    clattn_kv_cache *kv;
    bool appended; /* the KV case's append has succeeded: a repeat only attends */
} sweep;

static clattn_tensor view(const sweep *s, int id, size_t b, size_t h, size_t t, size_t d)
{
    return clattn_tensor_bhtd(s->buf[id], 0, b, h, t, d);
}

static void restore(sweep *s, int first, int last)
{
    for (int i = first; i < last; i++)
        buf_write(&s->e, s->buf[i], 0, s->initial[i], buf_elems[i] * sizeof(float));
}

static float *read_all(sweep *s, int id)
{
    float *h = malloc(buf_elems[id] * sizeof *h);
    buf_read(&s->e, s->buf[id], 0, h, buf_elems[id] * sizeof *h);
    return h;
}

/* ---- The cases' calls ---------------------------------------------------------------------- */

typedef clattn_status (*op_fn)(sweep *s, cl_event *ev);

static clattn_status op_sdpa(sweep *s, cl_event *ev, clattn_path path)
{
    const clattn_tensor Q = view(s, IN_Q, B, H, T, D), K = view(s, IN_KX, B, HKV, TK, D),
                        V = view(s, IN_VX, B, HKV, TK, D), O = view(s, OUT_O, B, H, T, D),
                        L = view(s, OUT_LSE, B, H, T, 1), P = view(s, OUT_P, B, H, T, TK);
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.path = path;
    p.mask.causal = CLATTN_CAUSAL_BOTTOM_RIGHT;
    if (path == CLATTN_PATH_UNFUSED)
        p.probs = &P;
    else
        p.lse = &L;
    return clattn_sdpa(s->cc, s->e.queue, &Q, &K, &V, &O, &p, 0, NULL, ev);
}
static clattn_status op_fused(sweep *s, cl_event *ev) { return op_sdpa(s, ev, CLATTN_PATH_FUSED); }
static clattn_status op_unfused(sweep *s, cl_event *ev) { return op_sdpa(s, ev, CLATTN_PATH_UNFUSED); }

/* Every model variant at once: a window with kept keys, soft-capping, ALiBi and sinks. */
static clattn_logit_params variant_logits(const sweep *s)
{
    clattn_logit_params lp = clattn_logit_params_default();
    lp.softcap = 3.0f;
    lp.alibi_slopes = s->buf[IN_SLOPES];
    lp.sinks = s->buf[IN_SINKS];
    return lp;
}
static clattn_status op_variants(sweep *s, cl_event *ev, clattn_path path)
{
    const clattn_tensor Q = view(s, IN_Q, B, H, T, D), K = view(s, IN_KX, B, HKV, TK, D),
                        V = view(s, IN_VX, B, HKV, TK, D), O = view(s, OUT_O, B, H, T, D),
                        L = view(s, OUT_LSE, B, H, T, 1);
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.path = path;
    p.mask.causal = CLATTN_CAUSAL_BOTTOM_RIGHT;
    p.mask.window_left = 4;
    p.mask.window_keep_first = 1;
    p.logits = variant_logits(s);
    p.lse = &L;
    return clattn_sdpa(s->cc, s->e.queue, &Q, &K, &V, &O, &p, 0, NULL, ev);
}
static clattn_status op_variants_fused(sweep *s, cl_event *ev)
{
    return op_variants(s, ev, CLATTN_PATH_FUSED);
}
static clattn_status op_variants_unfused(sweep *s, cl_event *ev)
{
    return op_variants(s, ev, CLATTN_PATH_UNFUSED);
}

/* A packed batch: the same buffers as one item of B·T queries and B·TK keys, three sequences
 * (one empty), the variants on, keys per sequence of their own (the offsets' copy is a point). */
static clattn_status op_varlen(sweep *s, cl_event *ev)
{
    const clattn_tensor Q = view(s, IN_Q, 1, H, B * T, D), K = view(s, IN_KX, 1, HKV, B * TK, D),
                        V = view(s, IN_VX, 1, HKV, B * TK, D), O = view(s, OUT_O, 1, H, B * T, D),
                        L = view(s, OUT_LSE, 1, H, B * T, 1);
    const size_t cq[] = {0, T, T, B * T}, ck[] = {0, 5, TK, B * TK};
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.mask.causal = CLATTN_CAUSAL_BOTTOM_RIGHT;
    p.mask.window_left = 4;
    p.logits = variant_logits(s);
    p.lse = &L;
    p.cu_seqlens_q = cq, p.cu_seqlens_k = ck, p.num_seqs = 3;
    return clattn_sdpa(s->cc, s->e.queue, &Q, &K, &V, &O, &p, 0, NULL, ev);
}

static clattn_status op_rope(sweep *s, cl_event *ev)
{
    const clattn_tensor X = view(s, IN_Q, B, H, T, D), Y = view(s, OUT_O, B, H, T, D);
    clattn_rope_params rp = clattn_rope_params_default();
    rp.rotary_dim = D / 2;
    rp.positions = s->buf[IN_SINKS]; /* any int32 [B]: the bits of its floats */
    return clattn_rope(s->cc, s->e.queue, &X, &Y, &rp, 0, NULL, ev);
}

static clattn_status op_linear(sweep *s, cl_event *ev)
{
    const clattn_tensor X = view(s, IN_X, B, 1, T, E), W = view(s, IN_W, 1, 1, E, E),
                        b = view(s, IN_BIAS, 1, 1, 1, E), Y = view(s, OUT_Y, B, 1, T, E);
    return clattn_linear(s->cc, s->e.queue, &X, &W, &b, &Y, 0, NULL, ev);
}

static clattn_status mha_new(sweep *s, clattn_mha **out)
{
    const clattn_tensor in = view(s, IN_WQKV, 1, 1, 3 * E, E), bi = view(s, IN_BQKV, 1, 1, 1, 3 * E),
                        wo = view(s, IN_WO, 1, 1, E, E), bo = view(s, IN_BO, 1, 1, 1, E);
    clattn_mha_params mp = clattn_mha_params_default();
    mp.embed_dim = E;
    mp.num_heads = H;
    mp.in_proj_weight = &in, mp.in_proj_bias = &bi, mp.out_proj_weight = &wo, mp.out_proj_bias = &bo;
    return clattn_mha_create(s->cc, &mp, out);
}

static clattn_status mha_run(sweep *s, clattn_mha *m, bool cross, cl_event *ev)
{
    const clattn_tensor X = view(s, IN_X, B, 1, T, E), XK = view(s, IN_XK, B, 1, TK, E),
                        Y = view(s, OUT_XO, B, 1, T, E), HW = view(s, OUT_HW, B, H, T, cross ? TK : T);
    clattn_mha_forward_params fp = clattn_mha_forward_params_default();
    fp.mask.causal = cross ? CLATTN_CAUSAL_NONE : CLATTN_CAUSAL_TOP_LEFT;
    fp.head_weights = cross ? &HW : NULL;
    fp.path = cross ? CLATTN_PATH_UNFUSED : CLATTN_PATH_AUTO;
    return clattn_mha_forward(m, s->e.queue, &X, cross ? &XK : &X, cross ? &XK : &X, &Y, &fp, 0,
                              NULL, ev);
}
static clattn_status op_mha_self(sweep *s, cl_event *ev) { return mha_run(s, s->mha, false, ev); }
static clattn_status op_mha_cross(sweep *s, cl_event *ev) { return mha_run(s, s->mha_cross, true, ev); }

/* A layer made from the caller's weights, one forward, destroyed. */
static clattn_status op_mha_create(sweep *s, cl_event *ev)
{
    clattn_mha *m = NULL;
    clattn_status st = mha_new(s, &m);
    if (st == CL_SUCCESS)
        st = mha_run(s, m, false, ev);
    clattn_mha_destroy(&m);
    return st;
}

/* Three new tokens appended to a cache holding a prompt, then their attention. The append's
 * event is the attention's wait list, released at once as a program would. */
static clattn_status op_kv(sweep *s, cl_event *ev)
{
    const clattn_tensor KN = view(s, IN_KN, B, HKV, 3, D), VN = view(s, IN_VN, B, HKV, 3, D),
                        QD = view(s, IN_QD, B, H, 3, D), O = view(s, OUT_M, B, H, 3, D);
    if (s->appended)
        return clattn_kv_cache_attend(s->kv, s->e.queue, &QD, &O, NULL, 0, NULL, ev);
    cl_event appended = NULL;
    clattn_status st = clattn_kv_cache_append(s->kv, s->e.queue, &KN, &VN, NULL, 0, NULL, &appended);
    if (st != CL_SUCCESS)
        return st;
    s->appended = true;
    f_handed(4); /* the append's event is the test's */
    st = clattn_kv_cache_attend(s->kv, s->e.queue, &QD, &O, NULL, 1, &appended, ev);
    clReleaseEvent(appended);
    return st;
}

static clattn_status op_merge(sweep *s, cl_event *ev)
{
    const clattn_tensor O1 = view(s, IN_O1, B, H, T, D), L1 = view(s, IN_L1, B, H, T, 1),
                        O2 = view(s, IN_O2, B, H, T, D), L2 = view(s, IN_L2, B, H, T, 1),
                        O = view(s, OUT_M, B, H, T, D), L = view(s, OUT_ML, B, H, T, 1);
    return clattn_merge(s->cc, s->e.queue, &O1, &L1, &O2, &L2, &O, &L, 0, NULL, ev);
}

/* A context of its own made over the program's, both paths of sdpa, destroyed: program builds
 * and the disk cache inside the sweep. */
static clattn_status op_cold(sweep *s, cl_event *ev)
{
    clattn_context_params p = clattn_context_params_default();
    p.context = s->e.context;
    p.device = s->e.device;
    p.kernels = test_kernel_config();
    clattn_context *keep = s->cc, *c = NULL;
    clattn_status st = clattn_context_create(&p, &c);
    if (st == CL_SUCCESS) {
        s->cc = c;
        st = op_unfused(s, NULL);
        if (st == CL_SUCCESS)
            st = op_fused(s, ev);
        s->cc = keep;
        clFinish(s->e.queue); /* the context may go only when its work has */
        clattn_context_destroy(&c);
    }
    return st;
}

/* A cache created, a prompt appended, three tokens appended and attended, destroyed. */
static clattn_status op_kv_create(sweep *s, cl_event *ev)
{
    clattn_kv_cache_params kp = clattn_kv_cache_params_default();
    kp.batch = B, kp.num_kv_heads = HKV, kp.head_dim = D, kp.capacity = 64;
    clattn_kv_cache *keep = s->kv;
    const bool appended = s->appended;
    clattn_status st = clattn_kv_cache_create(s->cc, &kp, &s->kv);
    if (st == CL_SUCCESS) {
        const clattn_tensor K = view(s, IN_K, B, HKV, T, D), V = view(s, IN_V, B, HKV, T, D);
        s->appended = false;
        st = clattn_kv_cache_append(s->kv, s->e.queue, &K, &V, NULL, 0, NULL, NULL);
        if (st == CL_SUCCESS)
            st = op_kv(s, ev);
        clFinish(s->e.queue); /* the cache may go only when its work has */
        clattn_kv_cache_destroy(&s->kv);
    }
    s->kv = keep;
    s->appended = appended;
    return st;
}

/* A cache of `dtype` with RoPE created, a prompt appended four times (76 keys: two key blocks, so
 * that the keys really split), three tokens attended with split keys and sinks (the merge adds
 * them), destroyed. */
static clattn_status kv_rope_run(sweep *s, cl_event *ev, clattn_dtype dtype)
{
    clattn_rope_params rp = clattn_rope_params_default();
    rp.layout = CLATTN_ROPE_GPTJ;
    clattn_kv_cache_params kp = clattn_kv_cache_params_default();
    kp.batch = B, kp.num_kv_heads = HKV, kp.head_dim = D, kp.capacity = 96, kp.rope = &rp;
    kp.dtype = dtype;
    clattn_kv_cache *kv = NULL;
    clattn_status st = clattn_kv_cache_create(s->cc, &kp, &kv);
    if (st == CL_SUCCESS) {
        const clattn_tensor K = view(s, IN_K, B, HKV, T, D), V = view(s, IN_V, B, HKV, T, D),
                            QD = view(s, IN_QD, B, H, 3, D), O = view(s, OUT_M, B, H, 3, D);
        for (int i = 0; i < 4 && st == CL_SUCCESS; i++)
            st = clattn_kv_cache_append(kv, s->e.queue, &K, &V, NULL, 0, NULL, NULL);
        clattn_kv_attend_params ap = clattn_kv_attend_params_default();
        ap.splits = 2;
        ap.logits = variant_logits(s);
        if (st == CL_SUCCESS)
            st = clattn_kv_cache_attend(kv, s->e.queue, &QD, &O, &ap, 0, NULL, ev);
        clFinish(s->e.queue); /* the cache may go only when its work has */
        clattn_kv_cache_destroy(&kv);
    }
    return st;
}
static clattn_status op_kv_rope(sweep *s, cl_event *ev) { return kv_rope_run(s, ev, CLATTN_F32); }
/* int8 rows: quantizing appends, dequantizing attention */
static clattn_status op_kv_q8(sweep *s, cl_event *ev) { return kv_rope_run(s, ev, CLATTN_Q8); }

/* Before each run: the state the call starts from. */
static void reset_kv(sweep *s)
{
    clattn_kv_cache_destroy(&s->kv);
    s->appended = false;
    clattn_kv_cache_params kp = clattn_kv_cache_params_default();
    kp.batch = B, kp.num_kv_heads = HKV, kp.head_dim = D, kp.capacity = 64;
    CL_OK(clattn_kv_cache_create(s->cc, &kp, &s->kv));
    const clattn_tensor K = view(s, IN_K, B, HKV, T, D), V = view(s, IN_V, B, HKV, T, D);
    CL_OK(clattn_kv_cache_append(s->kv, s->e.queue, &K, &V, NULL, 0, NULL, NULL));
    CL_OK(clFinish(s->e.queue));
}

/* A paged cache (pages of 4 tokens) whose sequence 0 holds the prompt of 19 tokens and whose
 * sequence 1 is a fork of it: the op's append of three tokens to both copies the shared last
 * page for one of them (copy on write) and takes fresh pages. */
static void reset_kv_paged(sweep *s)
{
    clattn_kv_cache_destroy(&s->kv);
    s->appended = false;
    clattn_kv_cache_params kp = clattn_kv_cache_params_default();
    kp.batch = B, kp.num_kv_heads = HKV, kp.head_dim = D, kp.capacity = 64;
    kp.page_size = 4, kp.num_pages = 16;
    CL_OK(clattn_kv_cache_create(s->cc, &kp, &s->kv));
    const clattn_tensor K = view(s, IN_K, B, HKV, T, D), V = view(s, IN_V, B, HKV, T, D);
    const size_t counts[B] = {T, 0};
    CL_OK(clattn_kv_cache_append(s->kv, s->e.queue, &K, &V, counts, 0, NULL, NULL));
    CL_OK(clattn_kv_cache_fork(s->kv, 0, 1));
    CL_OK(clFinish(s->e.queue));
}

/* An append of no tokens (which commits whatever append it plans: nothing), then op_kv: after a
 * point that failed, the repeated op starts with it. (Its cache: reset_kv_paged, below.) */
static clattn_status op_kv_paged(sweep *s, cl_event *ev)
{
    const clattn_tensor KN = view(s, IN_KN, B, HKV, 3, D), VN = view(s, IN_VN, B, HKV, 3, D);
    const size_t none[B] = {0, 0};
    clattn_status st = clattn_kv_cache_append(s->kv, s->e.queue, &KN, &VN, none, 0, NULL, NULL);
    return st != CL_SUCCESS ? st : op_kv(s, ev);
}

/* ---- The sweep ------------------------------------------------------------------------------ */

static void balances(long *b)
{
    for (int t = 0; t < OBJ_N; t++)
        b[t] = f_balance(t);
}

/* Waits (up to 2 s) for the completion callbacks that release a call's events to bring the
 * balance to `want`; false (and the difference printed) if they do not. */
static bool balanced(const long *want)
{
    long now[OBJ_N];
    for (int i = 0; i < 200; i++) {
        balances(now);
        if (memcmp(now, want, sizeof now) == 0)
            return true;
        const struct timespec pause = {0, 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    static const char *names[OBJ_N] = {"mem", "kernel", "program", "queue", "event", "context", "device"};
    for (int t = 0; t < OBJ_N; t++)
        if (now[t] != want[t])
            printf("    %s objects: %ld held by the library, %ld before\n", names[t], now[t], want[t]);
    return false;
}

/* One run of the op with `kinds` counted and none failing: how many calls it made. */
static long counted_run(sweep *s, op_fn op, void (*reset)(sweep *), int kinds)
{
    if (reset)
        reset(s);
    restore(s, FIRST_OUT, NBUF);
    cl_event ev = NULL;
    f_arm(kinds, 0);
    const clattn_status st = op(s, &ev);
    const long n = f_disarm();
    CL_OK(st);
    CL_OK(clWaitForEvents(1, &ev));
    clReleaseEvent(ev);
    f_handed(4);
    CL_OK(clFinish(s->e.queue));
    return n;
}

/* The library's state a caller can see besides buffers: a KV cache's lengths, then its free
 * pages (a paged cache's). */
static void kv_lengths(const sweep *s, size_t *len)
{
    for (size_t b = 0; b < B; b++)
        len[b] = s->kv ? clattn_kv_cache_length(s->kv, b) : 0;
    len[B] = clattn_kv_cache_free_pages(s->kv);
}

static bool same(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof *a) == 0;
}

/* One case: the op, what it writes, what resets it. */
static bool sweep_op(op_fn op, void (*reset)(sweep *), const int *outs, int nouts, bool need_mha)
{
    bool ok = true;
    sweep s;
    memset(&s, 0, sizeof s);
    env_open(&s.e, false);
    s.cc = s.e.cc;
    if (!controls()) {
        env_close(&s.e);
        return false;
    }
    uint64_t seed = 7;
    for (int i = 0; i < NBUF; i++) {
        s.initial[i] = malloc(buf_elems[i] * sizeof(float));
        if (i < FIRST_OUT) {
            fill_uniform(s.initial[i], buf_elems[i], &seed, -1, 1);
        } else {
            for (size_t j = 0; j < buf_elems[i]; j++)
                s.initial[i][j] = -12345.0f - (float)(j % 97);
        }
        s.buf[i] = buf_new(&s.e, buf_elems[i] * sizeof(float));
    }
    for (size_t j = 0; j < buf_elems[IN_L1]; j++) /* log-sum-exps of plausible size */
        s.initial[IN_L1][j] *= 3, s.initial[IN_L2][j] *= 3;
    restore(&s, 0, NBUF);
    if (need_mha) {
        CL_OK(mha_new(&s, &s.mha));
        CL_OK(mha_new(&s, &s.mha_cross));
    }

    /* Warm (builds, kept scratch), then the reference run, then one count per kind. */
    float *ref[NBUF] = {0};
    long total[3] = {0};
    counted_run(&s, op, reset, 0);
    counted_run(&s, op, reset, 0);
    for (int k = 0; k < nouts; k++)
        ref[outs[k]] = read_all(&s, outs[k]);
    size_t ref_len[B + 1], len[B + 1];
    kv_lengths(&s, ref_len);
    for (int kind = FAULT_CL; kind <= FAULT_ALLOC; kind++)
        total[kind] = counted_run(&s, op, reset, kind);
    /* What the library holds between calls, once the callbacks of those runs have come. */
    long baseline[OBJ_N];
    CL_OK(clattn_context_finish(s.cc));
    for (long prev[OBJ_N] = {-1};;) {
        const struct timespec pause = {0, 50 * 1000 * 1000};
        nanosleep(&pause, NULL);
        balances(baseline);
        if (memcmp(prev, baseline, sizeof prev) == 0)
            break;
        memcpy(prev, baseline, sizeof prev);
    }

    const char *every_s = getenv("FAULT_EVERY"), *offset_s = getenv("FAULT_OFFSET");
    const long every = every_s ? atol(every_s) : 1, offset = offset_s ? atol(offset_s) : 0;
    long points = 0, held = 0;
    for (int kind = FAULT_CL; kind <= FAULT_ALLOC; kind++) {
        for (long n = 1 + (every > 1 ? offset % every : 0); n <= total[kind]; n += every > 0 ? every : 1) {
            if (reset)
                reset(&s);
            restore(&s, FIRST_OUT, NBUF);
            CL_OK(clFinish(s.e.queue));
            balanced(baseline); /* a point before that did not balance has been reported */

            cl_event sentinel = (cl_event)(uintptr_t)0x5e17, ev = sentinel;
            f_arm(kind, n);
            const clattn_status st = op(&s, &ev);
            f_disarm();
            const char *what = f_failed();
            const bool wrote = f_enqueued();
            bool point_ok = true;
#define POINT_EXPECT(cond, ...)                                                                    \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("  %s point %ld (%s): ", kind == FAULT_CL ? "OpenCL" : "alloc", n,              \
                   what ? what : "no fault");                                                      \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            point_ok = false;                                                                      \
        }                                                                                          \
    } while (0)
            if (st == CL_SUCCESS) {
                POINT_EXPECT(ev != sentinel && ev != NULL, "success without an event");
                if (ev != sentinel && ev) {
                    clWaitForEvents(1, &ev);
                    clReleaseEvent(ev);
                    f_handed(4);
                }
            } else {
                POINT_EXPECT(ev == sentinel, "status %d (%s) but the event was written", st,
                             clattn_status_name(st));
                POINT_EXPECT(what != NULL, "status %d (%s) with no fault injected", st,
                             clattn_status_name(st));
            }
            CL_OK(clFinish(s.e.queue));
            CL_OK(clattn_context_finish(s.cc));
            /* The caller's buffers. */
            for (int i = 0; i < NBUF; i++) {
                bool is_out = false;
                for (int k = 0; k < nouts; k++)
                    is_out |= outs[k] == i;
                if (is_out && (st == CL_SUCCESS || wrote))
                    continue;
                float *now = read_all(&s, i);
                POINT_EXPECT(same(now, s.initial[i], buf_elems[i]), "buffer %d changed%s", i,
                             is_out ? " before any enqueue" : " (not an output)");
                free(now);
            }
            kv_lengths(&s, len);
            if (st == CL_SUCCESS) {
                POINT_EXPECT(memcmp(len, ref_len, sizeof len) == 0, "succeeded with other KV lengths");
                for (int k = 0; k < nouts; k++) {
                    float *now = read_all(&s, outs[k]);
                    POINT_EXPECT(same(now, ref[outs[k]], buf_elems[outs[k]]),
                                 "succeeded with other results (output %d)", outs[k]);
                    free(now);
                }
            }
            /* The call again, without a fault, from the state the point left (a sequence
             * repeats from the call that failed); after a failure it must match the run that
             * never failed. After a success it only brings the library's kept state (a layer's
             * scratch that could not be kept, say) back to the steady one. */
            cl_event again = NULL;
            const clattn_status st2 = op(&s, &again);
            POINT_EXPECT(st2 == CL_SUCCESS, "the repeated call failed: %d (%s)", st2,
                         clattn_status_name(st2));
            if (again) {
                clWaitForEvents(1, &again);
                clReleaseEvent(again);
                f_handed(4);
            }
            CL_OK(clFinish(s.e.queue));
            CL_OK(clattn_context_finish(s.cc)); /* which also opens the gates that have ended */
            if (st != CL_SUCCESS) {
                kv_lengths(&s, len);
                POINT_EXPECT(memcmp(len, ref_len, sizeof len) == 0,
                             "the repeated call left other KV lengths than a run that never failed");
            }
            for (int k = 0; st != CL_SUCCESS && st2 == CL_SUCCESS && k < nouts; k++) {
                float *now = read_all(&s, outs[k]);
                POINT_EXPECT(same(now, ref[outs[k]], buf_elems[outs[k]]),
                             "the repeated call differs from a run that never failed (output %d)",
                             outs[k]);
                free(now);
            }
            POINT_EXPECT(balanced(baseline), "OpenCL objects leaked or over-released");
            points++;
            held += point_ok;
            ok &= point_ok;
        }
    }
    printf("%ld OpenCL calls and %ld allocations per run; %ld fault points injected, %ld held\n",
           total[FAULT_CL], total[FAULT_ALLOC], points, held);

    clattn_kv_cache_destroy(&s.kv);
    clattn_mha_destroy(&s.mha);
    clattn_mha_destroy(&s.mha_cross);
    for (int i = 0; i < NBUF; i++) {
        clReleaseMemObject(s.buf[i]);
        free(s.initial[i]);
        free(ref[i]);
    }
    env_close(&s.e);
    return ok;
}

static bool sdpa_fused(void)
{
    static const int outs[] = {OUT_O, OUT_LSE};
    return sweep_op(op_fused, NULL, outs, 2, false);
}
static bool sdpa_unfused(void)
{
    static const int outs[] = {OUT_O, OUT_P};
    return sweep_op(op_unfused, NULL, outs, 2, false);
}
static bool linear(void)
{
    static const int outs[] = {OUT_Y};
    return sweep_op(op_linear, NULL, outs, 1, false);
}
static bool mha_self(void)
{
    static const int outs[] = {OUT_XO};
    return sweep_op(op_mha_self, NULL, outs, 1, true);
}
static bool mha_cross(void)
{
    static const int outs[] = {OUT_XO, OUT_HW};
    return sweep_op(op_mha_cross, NULL, outs, 2, true);
}
static bool mha_create(void)
{
    static const int outs[] = {OUT_XO};
    return sweep_op(op_mha_create, NULL, outs, 1, false);
}
static bool kv_append_attend(void)
{
    static const int outs[] = {OUT_M};
    return sweep_op(op_kv, reset_kv, outs, 1, false);
}
static bool kv_paged_append_attend(void)
{
    static const int outs[] = {OUT_M};
    return sweep_op(op_kv_paged, reset_kv_paged, outs, 1, false);
}
static bool kv_create(void)
{
    static const int outs[] = {OUT_M};
    return sweep_op(op_kv_create, NULL, outs, 1, false);
}
static bool merge(void)
{
    static const int outs[] = {OUT_M, OUT_ML};
    return sweep_op(op_merge, NULL, outs, 2, false);
}
static bool sdpa_variants_fused(void)
{
    static const int outs[] = {OUT_O, OUT_LSE};
    return sweep_op(op_variants_fused, NULL, outs, 2, false);
}
static bool sdpa_variants_unfused(void)
{
    static const int outs[] = {OUT_O, OUT_LSE};
    return sweep_op(op_variants_unfused, NULL, outs, 2, false);
}
static bool sdpa_varlen(void)
{
    static const int outs[] = {OUT_O, OUT_LSE};
    return sweep_op(op_varlen, NULL, outs, 2, false);
}
static bool rope(void)
{
    static const int outs[] = {OUT_O};
    return sweep_op(op_rope, NULL, outs, 1, false);
}
static bool kv_rope_create(void)
{
    static const int outs[] = {OUT_M};
    return sweep_op(op_kv_rope, NULL, outs, 1, false);
}
static bool kv_q8_create(void)
{
    static const int outs[] = {OUT_M};
    return sweep_op(op_kv_q8, NULL, outs, 1, false);
}
static bool cold_context(void)
{
    static const int outs[] = {OUT_O, OUT_LSE, OUT_P};
    return sweep_op(op_cold, NULL, outs, 3, false);
}

int main(int argc, char **argv)
{
    static const test_case cases[] = {
        CASE_IN(sdpa_fused, "auto-clattn"),
        CASE(sdpa_unfused),
        CASE(linear),
        CASE(mha_self),
        CASE(mha_cross),
        CASE(mha_create),
        CASE_IN(kv_append_attend, "auto-clattn"),
        CASE_IN(kv_paged_append_attend, "auto-clattn"),
        CASE_IN(kv_create, "auto-clattn"),
        CASE_IN(merge, "auto-clattn"),
        CASE(cold_context),
        CASE_IN(sdpa_variants_fused, "auto-clattn"),
        CASE(sdpa_variants_unfused),
        CASE_IN(sdpa_varlen, "auto-clattn"),
        CASE_IN(rope, "auto-clattn"),
        CASE_IN(kv_rope_create, "auto-clattn"),
        CASE_IN(kv_q8_create, "auto-clattn"),
    };
    return run_cases(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
