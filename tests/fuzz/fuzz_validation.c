/* libFuzzer harness over the validation layer: random dims, strides, offsets, buffers (small,
 * large, NULL, from another context), dtypes, masks, lengths, paths and flags, fed to every
 * public operation. The oracle: the call returns success or a documented status; on an error no
 * event comes back and every buffer is bit-identical; on success every element outside the
 * call's output views is unchanged (canaries). Any breach aborts, which libFuzzer reports with
 * the input; AddressSanitizer and UBSan watch the rest. Calls whose views would make real work
 * too large for a fuzzing rate (broadcast inputs with huge dims) only go through validation. */
#include "clattn.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBUF 4
static const size_t buf_elems[NBUF] = {16, 256, 2048, 16384};
static cl_context C;
static cl_command_queue Q;
static clattn_context *CC;
static cl_mem BUF[NBUF], FOREIGN, LENS;
static float *SNAP[NBUF], *AFTER[NBUF];
static unsigned char *REACH[NBUF];

static void fail(const char *why, clattn_status st)
{
    fprintf(stderr, "fuzz oracle: %s (status %s %d)\n", why, clattn_status_name(st), st);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    cl_int err = clattn_context_create(NULL, &CC);
    if (err != CL_SUCCESS)
        fail("no context", err);
    C = clattn_context_cl_context(CC);
    cl_device_id dev = clattn_context_cl_device(CC);
    Q = clCreateCommandQueue(C, dev, 0, &err);
    for (int i = 0; i < NBUF; i++) {
        BUF[i] = clCreateBuffer(C, CL_MEM_READ_WRITE, buf_elems[i] * 4, NULL, &err);
        SNAP[i] = malloc(buf_elems[i] * 4);
        AFTER[i] = malloc(buf_elems[i] * 4);
        REACH[i] = malloc(buf_elems[i]);
    }
    int lens[8] = {3, 0, 7, 100, -4, 2, 1, 5};
    LENS = clCreateBuffer(C, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof lens, lens, &err);
    cl_context other = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
    FOREIGN = clCreateBuffer(other, CL_MEM_READ_WRITE, 4096 * 4, NULL, &err);
    clReleaseContext(other); /* the buffer keeps it alive */
    return 0;
}

/* --- decoding ------------------------------------------------------------------------------- */

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

static uint8_t u8(reader *r)
{
    if (r->n == 0)
        return 0;
    r->n--;
    return *r->p++;
}

static size_t huge(reader *r)
{
    uint8_t v = u8(r);
    return v < 128 ? (size_t)1 << (v % 64) : SIZE_MAX - (v % 16);
}

static size_t dim(reader *r)
{
    uint8_t v = u8(r);
    return v < 200 ? v % 7 : v < 240 ? (size_t)(v - 200) * 3 : huge(r);
}

static size_t stride(reader *r)
{
    uint8_t v = u8(r);
    return v < 180 ? v % 40 : v < 220 ? (size_t)(v - 180) * 37 : huge(r);
}

static size_t offset(reader *r)
{
    uint8_t v = u8(r);
    return v < 200 ? v % 64 : v < 240 ? (size_t)(v - 200) * 1000 : huge(r);
}

static cl_mem buffer(reader *r)
{
    switch (u8(r) % 8) {
    case 0: case 1: return BUF[3];
    case 2: case 3: return BUF[2];
    case 4: return BUF[1];
    case 5: return BUF[0];
    case 6: return NULL;
    default: return FOREIGN;
    }
}

static clattn_tensor tensor(reader *r)
{
    clattn_tensor t;
    t.buffer = buffer(r);
    t.offset = offset(r);
    uint8_t d = u8(r);
    /* mostly float, then fp16, the storage-only dtypes (bfloat16, int8 rows), unknown values */
    t.dtype = d < 240   ? CLATTN_F32
              : d < 246 ? CLATTN_F16
              : d < 248 ? CLATTN_BF16
              : d < 250 ? CLATTN_Q8
                        : (clattn_dtype)d;
    for (int i = 0; i < 4; i++)
        t.dims[i] = dim(r);
    for (int i = 0; i < 4; i++)
        t.strides[i] = stride(r);
    return t;
}

/* log2 of a view's element count, saturating: the work bound. */
static double size_log2(const clattn_tensor *t)
{
    double s = 0;
    for (int i = 0; i < 4; i++) {
        if (t->dims[i] == 0)
            return -1e9;
        double x = (double)t->dims[i];
        int e = 0;
        while (x >= 2) {
            x /= 2;
            e++;
        }
        s += e + (x > 1 ? 1 : 0);
    }
    return s;
}

/* --- the oracle ----------------------------------------------------------------------------- */

static void snapshot(float **to)
{
    for (int i = 0; i < NBUF; i++)
        clEnqueueReadBuffer(Q, BUF[i], CL_TRUE, 0, buf_elems[i] * 4, to[i], 0, NULL, NULL);
}

/* Marks the elements of `t` in its buffer as writable by the call. */
static void reach(const clattn_tensor *t)
{
    if (!t || t->dims[0] == 0 || t->dims[1] == 0 || t->dims[2] == 0 || t->dims[3] == 0)
        return; /* empty: reaches nothing, however large its other dims */
    for (int b = 0; b < NBUF; b++) {
        if (t->buffer != BUF[b])
            continue;
        for (size_t i0 = 0; i0 < t->dims[0]; i0++)
            for (size_t i1 = 0; i1 < t->dims[1]; i1++)
                for (size_t i2 = 0; i2 < t->dims[2]; i2++)
                    for (size_t i3 = 0; i3 < t->dims[3]; i3++) {
                        size_t at = t->offset + i0 * t->strides[0] + i1 * t->strides[1] +
                                    i2 * t->strides[2] + i3 * t->strides[3];
                        if (at >= buf_elems[b])
                            fail("a successful call's output view runs past its buffer", 0);
                        REACH[b][at] = 1;
                    }
    }
}

static int documented(clattn_status st)
{
    switch (st) {
#define X(name, value, msg) case value:
        CLATTN_STATUS_LIST(X)
#undef X
    case CL_OUT_OF_RESOURCES:
    case CL_OUT_OF_HOST_MEMORY:
    case CL_MEM_OBJECT_ALLOCATION_FAILURE:
        return 1;
    default:
        return 0;
    }
}

#define EVENT_SENTINEL ((cl_event)(uintptr_t)0x5eed)

/* How many calls ended in each status, printed at exit: the bad inputs tried. */
static unsigned long n_success, n_errors, n_calls;
static unsigned long by_code[64]; /* library codes 1000 .. 1063 */

__attribute__((destructor)) static void report(void)
{
    if (n_calls == 0)
        return;
    fprintf(stderr, "fuzz calls: %lu, succeeded: %lu, refused with a status: %lu\n", n_calls,
            n_success, n_errors);
    for (int i = 0; i < 64; i++)
        if (by_code[i])
            fprintf(stderr, "  %-36s %lu\n", clattn_status_name(1000 + i), by_code[i]);
}

/* Judges one call: `outs` are its output views (NULL entries ignored). */
static void judge(clattn_status st, cl_event ev, const clattn_tensor *const *outs, int nouts)
{
    if (!documented(st))
        fail("undocumented status", st);
    n_calls++;
    if (st == CL_SUCCESS)
        n_success++;
    else
        n_errors++;
    if (st >= 1000 && st < 1064)
        by_code[st - 1000]++;
    if (st != CL_SUCCESS && ev != EVENT_SENTINEL)
        fail("an event came back from a failed call", st);
    if (st == CL_SUCCESS && ev != EVENT_SENTINEL) {
        if (!ev)
            fail("success without the event asked for", st);
        clWaitForEvents(1, &ev);
        clReleaseEvent(ev);
    }
    clFinish(Q);
    for (int b = 0; b < NBUF; b++)
        memset(REACH[b], 0, buf_elems[b]);
    if (st == CL_SUCCESS)
        for (int i = 0; i < nouts; i++)
            reach(outs[i]);
    snapshot(AFTER);
    for (int b = 0; b < NBUF; b++)
        for (size_t i = 0; i < buf_elems[b]; i++)
            if (!REACH[b][i] && memcmp(&SNAP[b][i], &AFTER[b][i], 4) != 0)
                fail(st == CL_SUCCESS ? "a canary outside the outputs changed"
                                      : "a failed call changed a buffer", st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reader r = {data, size};
    /* Fresh canaries: a pattern that any write disturbs. */
    for (int b = 0; b < NBUF; b++) {
        for (size_t i = 0; i < buf_elems[b]; i++)
            SNAP[b][i] = (float)(i % 97) * 0.25f - 7.0f;
        clEnqueueWriteBuffer(Q, BUF[b], CL_TRUE, 0, buf_elems[b] * 4, SNAP[b], 0, NULL, NULL);
    }
    const uint8_t op = u8(&r) % 10;
    clattn_tensor t[6];
    for (int i = 0; i < 6; i++)
        t[i] = tensor(&r);
    double work = 0;
    for (int i = 0; i < 6; i++)
        if (size_log2(&t[i]) > work)
            work = size_log2(&t[i]);
    const int runnable = work <= 14; /* at most 16k elements per view */
    const uint8_t flags = u8(&r);
    clattn_mask_params mp = clattn_mask_params_default();
    mp.causal = (clattn_causal)(u8(&r) % 4); /* 3 is not a valid value */
    mp.additive = (flags & 1) ? &t[4] : NULL;
    mp.key_lengths = (flags & 2) ? ((flags & 64) ? BUF[0] : LENS) : NULL;
    mp.key_lengths_offset = u8(&r) % 10;
    /* Windows: either side unbounded, a key count, or an invalid negative; kept first keys. */
    const uint8_t var = u8(&r);
    if (var & 1) {
        mp.window_left = (int8_t)u8(&r);
        mp.window_right = (var & 2) ? (int8_t)u8(&r) : CLATTN_WINDOW_UNBOUNDED;
        mp.window_keep_first = u8(&r) % 40;
        /* a query offset: small either way, or near the 2^38 bound on either side of it */
        const uint8_t off = u8(&r);
        mp.query_offset = (ptrdiff_t)(int8_t)u8(&r);
        if (off & 1)
            mp.query_offset += (off & 2) ? ((ptrdiff_t)1 << 38) : -((ptrdiff_t)1 << 38);
    }
    /* Soft-capping (negative, zero, NaN and infinite caps among them), ALiBi slopes and sinks
     * from any buffer (a short one, another context's) at any offset. */
    clattn_logit_params lp = clattn_logit_params_default();
    if (var & 4) {
        const uint8_t c = u8(&r);
        lp.softcap = c == 255 ? NAN : c == 254 ? INFINITY : (float)((int)c - 64) * 0.25f;
    }
    if (var & 8) {
        const uint8_t b = u8(&r);
        lp.alibi_slopes = (b & 4) ? FOREIGN : BUF[b & 3];
        lp.alibi_slopes_offset = (size_t)(b >> 3) * 500;
    }
    if (var & 16) {
        const uint8_t b = u8(&r);
        lp.sinks = (b & 4) ? FOREIGN : BUF[b & 3];
        lp.sinks_offset = (size_t)(b >> 3) * 500;
    }
    /* A packed batch (sdpa and the layer): up to 4 sequences, offsets stepping by drawn amounts
     * (a step of 255 goes back 1), the key offsets the same or their own. */
    size_t cu_q[5] = {0}, cu_k[5] = {0}, n_seqs = 0;
    const int varlen = var & 32;
    if (varlen) {
        n_seqs = u8(&r) % 5;
        for (size_t i = 0; i < n_seqs; i++) {
            const uint8_t a = u8(&r), b = u8(&r);
            cu_q[i + 1] = a == 255 ? cu_q[i] - 1 : cu_q[i] + a % 12;
            cu_k[i + 1] = b == 255 ? cu_k[i] - 1 : cu_k[i] + b % 12;
        }
    }
    cl_event ev = EVENT_SENTINEL;
    cl_event *evp = (flags & 128) ? NULL : &ev;
    clattn_status st = CL_SUCCESS;

    switch (op) {
    case 0: { /* sdpa */
        clattn_sdpa_params p = clattn_sdpa_params_default();
        p.mask = mp;
        p.logits = lp;
        p.path = (clattn_path)(u8(&r) % 4);
        p.probs = (flags & 4) ? &t[5] : NULL;
        p.lse = (flags & 8) ? &t[5] : NULL;
        uint8_t sc = u8(&r);
        p.scale = sc < 128 ? CLATTN_SCALE_DEFAULT : (float)(sc - 192) * 0.5f;
        if (flags & 16)
            p.reserved[0] = &p;
        if (varlen) {
            p.cu_seqlens_q = cu_q;
            p.cu_seqlens_k = (var & 64) ? cu_k : NULL;
            p.num_seqs = n_seqs;
        }
        if (runnable) {
            st = clattn_sdpa(CC, Q, &t[0], &t[1], &t[2], &t[3], &p, 0, NULL, evp);
            const clattn_tensor *outs[] = {&t[3], p.probs, p.lse};
            judge(st, ev, outs, 3);
        } else {
            size_t bytes;
            st = clattn_sdpa_workspace_size(CC, &t[0], &t[1], &t[2], &t[3], &p, &bytes);
            judge(st, EVENT_SENTINEL, NULL, 0);
        }
        break;
    }
    case 1: /* linear */
        if (runnable) {
            st = clattn_linear(CC, Q, &t[0], &t[1], (flags & 4) ? &t[2] : NULL, &t[3], 0, NULL, evp);
            const clattn_tensor *outs[] = {&t[3]};
            judge(st, ev, outs, 1);
        }
        break;
    case 2: /* scores */
        if (runnable) {
            st = clattn_scores(CC, Q, &t[0], &t[1], &t[2], (flags & 4) ? 0.5f : CLATTN_SCALE_DEFAULT,
                               0, NULL, evp);
            const clattn_tensor *outs[] = {&t[2]};
            judge(st, ev, outs, 1);
        }
        break;
    case 3: /* mask */
        if (runnable) {
            st = clattn_mask(CC, Q, &t[0], (flags & 32) ? NULL : &mp, 0, NULL, evp);
            const clattn_tensor *outs[] = {&t[0]};
            judge(st, ev, outs, 1);
        }
        break;
    case 4: /* softmax, in place when flagged */
        if (runnable) {
            const clattn_tensor *P = (flags & 4) ? &t[0] : &t[1];
            st = clattn_softmax(CC, Q, &t[0], P, (flags & 8) ? &t[2] : NULL, 0, NULL, evp);
            const clattn_tensor *outs[] = {P, (flags & 8) ? &t[2] : NULL};
            judge(st, ev, outs, 2);
        }
        break;
    case 5: /* weighted sum */
        if (runnable) {
            st = clattn_weighted_sum(CC, Q, &t[0], &t[1], &t[2], 0, NULL, evp);
            const clattn_tensor *outs[] = {&t[2]};
            judge(st, ev, outs, 1);
        }
        break;
    case 6: /* merge, in place when flagged */
        if (runnable) {
            const clattn_tensor *O = (flags & 4) ? &t[0] : &t[4];
            const clattn_tensor *L = (flags & 8) ? &t[1] : ((flags & 16) ? NULL : &t[5]);
            st = clattn_merge(CC, Q, &t[0], &t[1], &t[2], &t[3], O, L, 0, NULL, evp);
            const clattn_tensor *outs[] = {O, L};
            judge(st, ev, outs, 2);
        }
        break;
    case 8: { /* RoPE: out of place, or in place when flagged */
        clattn_rope_params rp = clattn_rope_params_default();
        rp.layout = (clattn_rope_layout)(u8(&r) % 3); /* 2 is not a valid value */
        rp.rotary_dim = u8(&r) % 20;
        const uint8_t th = u8(&r);
        rp.theta = th == 255 ? NAN : (float)th * 100.0f; /* 0 is invalid */
        const uint8_t tb = u8(&r);
        if (tb & 1) {
            rp.inv_freq = (tb & 2) ? FOREIGN : BUF[(tb >> 2) & 3];
            rp.inv_freq_offset = (size_t)(tb >> 4) * 300;
        }
        if (tb & 64) {
            rp.positions = (tb & 128) ? LENS : BUF[(tb >> 2) & 3];
            rp.positions_offset = u8(&r) % 12;
        }
        if (runnable) {
            const clattn_tensor *Y = (flags & 4) ? &t[0] : &t[1];
            st = clattn_rope(CC, Q, &t[0], Y, (flags & 32) ? NULL : &rp, 0, NULL, evp);
            const clattn_tensor *outs[] = {Y};
            judge(st, ev, outs, 1);
        }
        break;
    }
    case 9: { /* the KV cache: create, append t[0], t[1] with drawn counts, attend t[2] into t[3] */
        clattn_kv_cache_params kp = clattn_kv_cache_params_default();
        kp.batch = u8(&r) % 4;
        kp.num_kv_heads = u8(&r) % 4;
        kp.head_dim = u8(&r) % 20;
        kp.capacity = u8(&r) % 40;
        const uint8_t d = u8(&r); /* every storage dtype, and values that are none */
        kp.dtype = d < 64 ? CLATTN_F32 : d < 128 ? CLATTN_F16 : d < 160 ? CLATTN_BF16
                 : d < 250 ? CLATTN_Q8 : (clattn_dtype)d;
        clattn_rope_params rp = clattn_rope_params_default();
        rp.rotary_dim = u8(&r) % 20;
        kp.rope = (flags & 32) ? &rp : NULL;
        kp.page_size = u8(&r) % 6; /* 0: contiguous */
        kp.num_pages = u8(&r) % 12;
        clattn_kv_cache *kv = NULL;
        st = clattn_kv_cache_create(CC, &kp, &kv);
        judge(st, EVENT_SENTINEL, NULL, 0);
        if (st != CL_SUCCESS)
            break;
        size_t counts[4];
        for (int i = 0; i < 4; i++)
            counts[i] = u8(&r) % 12;
        if (runnable) {
            st = clattn_kv_cache_append(kv, Q, &t[0], &t[1], (flags & 4) ? counts : NULL, 0, NULL,
                                        evp);
            judge(st, ev, NULL, 0); /* writes nothing of the caller's */
            ev = EVENT_SENTINEL;
            /* a paged cache's host calls: a fork and a release of drawn sequences (bit 0: fork
             * from bits 2-3 into bits 4-5; bit 6: release bit 7; bit 1: append again) */
            const uint8_t pg = u8(&r);
            if (pg & 1)
                judge(clattn_kv_cache_fork(kv, (pg >> 2) & 3, (pg >> 4) & 3), EVENT_SENTINEL, NULL, 0);
            if (pg & 64)
                judge(clattn_kv_cache_release(kv, pg >> 7), EVENT_SENTINEL, NULL, 0);
            if (pg & 2) { /* and a second append, into what the fork shares */
                st = clattn_kv_cache_append(kv, Q, &t[0], &t[1], (flags & 4) ? counts : NULL, 0,
                                            NULL, evp);
                judge(st, ev, NULL, 0);
                ev = EVENT_SENTINEL;
            }
            clattn_kv_attend_params ap = clattn_kv_attend_params_default();
            ap.splits = u8(&r) % 5;
            ap.lse = (flags & 8) ? &t[4] : NULL;
            ap.window_left = mp.window_left;
            ap.window_keep_first = mp.window_keep_first;
            ap.logits = lp;
            ap.cross = (flags & 16) != 0;
            if (varlen) /* mixed steps: packed queries */
                ap.cu_seqlens_q = cu_q, ap.num_seqs = n_seqs;
            st = clattn_kv_cache_attend(kv, Q, &t[2], &t[3], &ap, 0, NULL, evp);
            const clattn_tensor *outs[] = {&t[3], ap.lse};
            judge(st, ev, outs, 2);
        }
        clattn_kv_cache_destroy(&kv);
        break;
    }
    default: { /* the multi-head layer: create, size query, forward */
        clattn_mha_params mp2 = clattn_mha_params_default();
        mp2.embed_dim = u8(&r) % 20;
        mp2.num_heads = u8(&r) % 5;
        mp2.num_kv_heads = u8(&r) % 5;
        mp2.kdim = u8(&r) % 20;
        mp2.vdim = u8(&r) % 20;
        mp2.bias = flags & 4;
        if (flags & 8) {
            mp2.in_proj_weight = &t[0];
        } else {
            mp2.q_proj_weight = &t[0];
            mp2.k_proj_weight = &t[1];
            mp2.v_proj_weight = &t[2];
        }
        mp2.in_proj_bias = mp2.bias ? &t[3] : NULL;
        mp2.out_proj_weight = &t[4];
        mp2.out_proj_bias = mp2.bias ? &t[5] : NULL;
        clattn_mha *m = NULL;
        st = clattn_mha_create(CC, &mp2, &m);
        judge(st, EVENT_SENTINEL, NULL, 0);
        if (st == CL_SUCCESS) {
            clattn_tensor x = tensor(&r), kv = tensor(&r), out = tensor(&r), w = tensor(&r);
            clattn_mha_forward_params fp = clattn_mha_forward_params_default();
            fp.mask = mp;
            fp.logits = lp;
            fp.weights = (flags & 16) ? &w : NULL;
            if (varlen) {
                fp.cu_seqlens_q = cu_q;
                fp.cu_seqlens_k = (var & 64) ? cu_k : NULL;
                fp.num_seqs = n_seqs;
            }
            size_t bytes;
            st = clattn_mha_workspace_size(m, &x, &kv, &kv, &fp, &bytes);
            judge(st, EVENT_SENTINEL, NULL, 0);
            if (size_log2(&x) <= 14 && size_log2(&kv) <= 14 && size_log2(&out) <= 14) {
                st = clattn_mha_forward(m, Q, &x, (flags & 32) ? &x : &kv, (flags & 32) ? &x : &kv,
                                        &out, &fp, 0, NULL, evp);
                const clattn_tensor *outs[] = {&out, fp.weights};
                judge(st, ev, outs, 2);
            }
            clattn_mha_destroy(&m);
        }
        break;
    }
    }
    return 0;
}
