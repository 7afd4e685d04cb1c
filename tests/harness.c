/* Test harness (see harness.h). Tests may exit on environment failures; the library may not. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The setup of this run (run_cases). */
static clattn_path g_path = CLATTN_PATH_AUTO;
static clattn_kernel_config g_kernels;

clattn_path test_path(void)
{
    return g_path;
}

clattn_kernel_config test_kernel_config(void)
{
    return g_kernels;
}

static void log_to_stderr(void *user, clattn_log_level level, const char *msg)
{
    (void)user;
    fprintf(stderr, "[clattn log %d] %s\n", (int)level, msg);
}

void env_open_default(test_env *e)
{
    memset(e, 0, sizeof *e);
    clattn_context_params p = clattn_context_params_default();
    p.log = log_to_stderr;
    p.kernels = test_kernel_config();
    CL_OK(clattn_context_create(&p, &e->cc));
    e->context = clattn_context_cl_context(e->cc);
    e->device = clattn_context_cl_device(e->cc);
    CL_OK(clRetainContext(e->context));
    cl_int err;
    e->queue = clCreateCommandQueue(e->context, e->device, 0, &err);
    CL_OK(err);
}

void env_open(test_env *e, bool out_of_order)
{
    /* Borrow clattn's device choice (CLATTN_DEVICE etc.), then build our own context on it. */
    test_env tmp;
    env_open_default(&tmp);
    cl_device_id dev = tmp.device;
    clRetainDevice(dev);
    env_close(&tmp);

    memset(e, 0, sizeof *e);
    cl_int err;
    e->device = dev;
    e->context = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
    CL_OK(err);
    e->queue = clCreateCommandQueue(e->context, dev,
                                    out_of_order ? CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE : 0, &err);
    CL_OK(err);
    clattn_context_params p = clattn_context_params_default();
    p.context = e->context;
    p.device = dev;
    p.log = log_to_stderr;
    p.kernels = test_kernel_config();
    CL_OK(clattn_context_create(&p, &e->cc));
}

void env_close(test_env *e)
{
    if (e->queue) {
        clFinish(e->queue);
        clReleaseCommandQueue(e->queue);
    }
    clattn_context_destroy(&e->cc);
    if (e->context)
        clReleaseContext(e->context);
    if (e->device)
        clReleaseDevice(e->device);
    memset(e, 0, sizeof *e);
}

void kernel_dir_new(char *dir)
{
    strcpy(dir, "/tmp/clattn-kernels-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(2);
    }
}

void kernel_dir_write(const char *dir, const char *file, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
}

void kernel_dir_copy(const char *dir, const char *kernel)
{
    const char *src_dir = getenv("CLATTN_TEST_KERNELS");
    char src[512], name[128];
    snprintf(src, sizeof src, "%s/%s.cl", src_dir ? src_dir : "(CLATTN_TEST_KERNELS unset)", kernel);
    snprintf(name, sizeof name, "%s.cl", kernel);
    FILE *in = fopen(src, "rb");
    if (!in) {
        fprintf(stderr, "cannot read %s (CLATTN_TEST_KERNELS: the kernels/ folder)\n", src);
        exit(2);
    }
    char *text = calloc(1, 1 << 20);
    size_t n = fread(text, 1, (1 << 20) - 1, in);
    fclose(in);
    text[n] = '\0';
    kernel_dir_write(dir, name, text);
    free(text);
}

clattn_context *kernel_dir_context(test_env *e, const char *dir, clattn_log_fn log, void *log_user)
{
    clattn_context_params p = clattn_context_params_default();
    p.context = e->context;
    p.device = e->device;
    p.log = log;
    p.log_user = log_user;
    p.disk_cache_off = 1;
    clattn_context *cc = NULL;
    setenv("CLATTN_KERNEL_DIR", dir, 1);
    CL_OK(clattn_context_create(&p, &cc));
    unsetenv("CLATTN_KERNEL_DIR"); /* the context keeps the directory it was created with */
    return cc;
}

void kernel_dir_remove(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (de->d_name[0] != '.')
            remove(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

cl_uint ctx_refs(cl_context c)
{
    cl_uint n = 0;
    CL_OK(clGetContextInfo(c, CL_CONTEXT_REFERENCE_COUNT, sizeof n, &n, NULL));
    return n;
}

cl_uint mem_refs(cl_mem m)
{
    cl_uint n = 0;
    CL_OK(clGetMemObjectInfo(m, CL_MEM_REFERENCE_COUNT, sizeof n, &n, NULL));
    return n;
}

cl_mem buf_new(test_env *e, size_t bytes)
{
    cl_int err;
    cl_mem b = clCreateBuffer(e->context, CL_MEM_READ_WRITE, bytes ? bytes : 4, NULL, &err);
    CL_OK(err);
    return b;
}

void buf_write(test_env *e, cl_mem b, size_t off, const void *src, size_t bytes)
{
    if (bytes)
        CL_OK(clEnqueueWriteBuffer(e->queue, b, CL_TRUE, off, bytes, src, 0, NULL, NULL));
}

void buf_read(test_env *e, cl_mem b, size_t off, void *dst, size_t bytes)
{
    CL_OK(clFinish(e->queue));
    if (bytes)
        CL_OK(clEnqueueReadBuffer(e->queue, b, CL_TRUE, off, bytes, dst, 0, NULL, NULL));
}

uint16_t half_from_float(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    const uint32_t abs = x & 0x7fffffff;
    if (abs >= 0x7f800000) /* Inf, NaN */
        return sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 : 0);
    if (abs >= 0x477ff000) /* rounds to beyond 65504 */
        return sign | 0x7c00;
    if (abs < 0x38800000) { /* subnormal half (or zero): scale by 2^24 and round */
        float a;
        memcpy(&a, &abs, 4);
        return sign | (uint16_t)lrintf(a * 16777216.0f);
    }
    /* Normal: drop 13 mantissa bits, rounding to nearest even. */
    uint32_t h = ((abs >> 13) - (112u << 10));
    const uint32_t rest = abs & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1)))
        h++;
    return sign | (uint16_t)h;
}

float half_to_float(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    float f;
    if (e == 0) {
        f = (float)m / 16777216.0f;
        return sign ? -f : f;
    }
    uint32_t x = sign | (e == 31 ? 0x7f800000 | (m << 13) : ((e + 112) << 23) | (m << 13));
    memcpy(&f, &x, 4);
    return f;
}

float bf16_round(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

cl_mem buf_floats(test_env *e, const double *x, size_t n)
{
    float *f = malloc((n ? n : 1) * sizeof *f);
    for (size_t i = 0; i < n; i++)
        f[i] = (float)x[i];
    cl_mem b = buf_new(e, n * sizeof *f);
    buf_write(e, b, 0, f, n * sizeof *f);
    free(f);
    return b;
}

static uint64_t next(uint64_t *s)
{
    /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void fill_uniform(float *x, size_t n, uint64_t *seed, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * (float)((next(seed) >> 40) * (1.0 / 16777216.0));
}

view_buf vb_new(test_env *e, layout l, size_t B, size_t H, size_t T, size_t D, size_t offset,
                size_t pad, uint64_t *seed, bool random)
{
    view_buf v;
    memset(&v, 0, sizeof v);
    size_t n = B * H * T * D;
    v.elems = offset + n + pad;
    v.host = malloc((v.elems ? v.elems : 1) * sizeof(float));
    if (random)
        fill_uniform(v.host, v.elems, seed, -1.0f, 1.0f);
    else
        for (size_t i = 0; i < v.elems; i++)
            v.host[i] = NAN; /* sentinel: an unwritten output element or a read of one shows */
    cl_mem b = buf_new(e, v.elems * sizeof(float));
    buf_write(e, b, 0, v.host, v.elems * sizeof(float));
    v.t = l == LAYOUT_BHTD ? clattn_tensor_bhtd(b, offset, B, H, T, D)
                           : clattn_tensor_bthd(b, offset, B, T, H, D);
    return v;
}

void vb_free(view_buf *v)
{
    if (v->t.buffer)
        clReleaseMemObject(v->t.buffer);
    free(v->host);
    memset(v, 0, sizeof *v);
}

void vb_read_all(test_env *e, const view_buf *v, float *out)
{
    buf_read(e, v->t.buffer, 0, out, v->elems * sizeof(float));
}

static size_t at(const clattn_tensor *t, size_t a, size_t b, size_t c, size_t d)
{
    return t->offset + a * t->strides[0] + b * t->strides[1] + c * t->strides[2] + d * t->strides[3];
}

double *vb_dense(const view_buf *v, const float *all)
{
    const clattn_tensor *t = &v->t;
    size_t n = t->dims[0] * t->dims[1] * t->dims[2] * t->dims[3];
    double *d = malloc((n ? n : 1) * sizeof *d);
    size_t k = 0;
    for (size_t a = 0; a < t->dims[0]; a++)
        for (size_t b = 0; b < t->dims[1]; b++)
            for (size_t c = 0; c < t->dims[2]; c++)
                for (size_t e = 0; e < t->dims[3]; e++)
                    d[k++] = all[at(t, a, b, c, e)];
    return d;
}

bool vb_same(test_env *e, const view_buf *v)
{
    float *now = malloc((v->elems ? v->elems : 1) * sizeof *now);
    vb_read_all(e, v, now);
    bool same = memcmp(now, v->host, v->elems * sizeof *now) == 0;
    if (!same)
        fprintf(stderr, "an input buffer changed\n");
    free(now);
    return same;
}

bool vb_outside_unchanged(const view_buf *v, const float *before, const float *all)
{
    const clattn_tensor *t = &v->t;
    char *inside = calloc(v->elems ? v->elems : 1, 1);
    for (size_t a = 0; a < t->dims[0]; a++)
        for (size_t b = 0; b < t->dims[1]; b++)
            for (size_t c = 0; c < t->dims[2]; c++)
                for (size_t e = 0; e < t->dims[3]; e++)
                    inside[at(t, a, b, c, e)] = 1;
    bool same = true;
    for (size_t i = 0; i < v->elems; i++)
        if (!inside[i] && memcmp(&before[i], &all[i], sizeof(float)) != 0) {
            fprintf(stderr, "element %zu outside the view changed: %g -> %g\n", i, before[i], all[i]);
            same = false;
            break;
        }
    free(inside);
    return same;
}

bool check_close(const char *what, const double *got, const double *ref, size_t n, double tol)
{
    double scale = 1.0, err = 0.0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(ref[i]) && fabs(ref[i]) > scale)
            scale = fabs(ref[i]);
    for (size_t i = 0; i < n; i++) {
        double e;
        if (!isfinite(ref[i])) /* NaN must stay NaN, an infinity must match exactly */
            e = (isnan(ref[i]) ? isnan(got[i]) : got[i] == ref[i]) ? 0.0 : INFINITY;
        else
            e = isnan(got[i]) ? INFINITY : fabs(got[i] - ref[i]);
        if (e > err) {
            err = e;
            worst = i;
        }
    }
    bool ok = err <= tol * scale;
    printf("%-28s n=%-8zu max_err=%.3g (limit %.3g)%s\n", what, n, err, tol * scale,
           ok ? "" : "  FAIL");
    if (!ok)
        printf("  worst at %zu: got %.9g want %.9g\n", worst, got[worst], ref[worst]);
    return ok;
}

/* Whether `word` is one of the space-separated words of `list`. */
static bool listed(const char *list, const char *word)
{
    const size_t n = strlen(word);
    for (const char *p = list; (p = strstr(p, word)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return true;
    return false;
}

/* Sets the path and the kernel overrides from a setup ("<path>[-<word>]..."); false when it
 * is not one. */
static bool apply_setup(const char *setup)
{
    static const struct { const char *name; clattn_path path; } paths[] = {
        {"auto", CLATTN_PATH_AUTO}, {"unfused", CLATTN_PATH_UNFUSED}, {"fused", CLATTN_PATH_FUSED}};
    char words[64];
    snprintf(words, sizeof words, "%s", setup);
    bool found = false;
    char *save = NULL;
    for (char *w = strtok_r(words, "-", &save); w; w = strtok_r(NULL, "-", &save)) {
        if (!found) { /* the first word is the path */
            for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
                if (strcmp(w, paths[i].name) == 0) {
                    g_path = paths[i].path;
                    found = true;
                }
            if (!found)
                return false;
        } else if (strcmp(w, "cpu") == 0) {
            g_kernels.flash_variant = CLATTN_FLASH_VARIANT_CPU;
        } else if (strcmp(w, "gpu") == 0) {
            g_kernels.flash_variant = CLATTN_FLASH_VARIANT_GPU;
        } else if (strcmp(w, "clblast") == 0) {
            g_kernels.gemm_engine = CLATTN_GEMM_ENGINE_CLBLAST;
        } else if (strcmp(w, "clattn") == 0) {
            g_kernels.gemm_engine = CLATTN_GEMM_ENGINE_CLATTN;
        } else {
            return false;
        }
    }
    return found;
}

int run_cases(int argc, char **argv, const test_case *cases, size_t n)
{
    const char *setup = argc > 2 ? argv[2] : "";
    if (*setup && !apply_setup(setup)) {
        fprintf(stderr, "no setup named %s\n", setup);
        return 2;
    }
    int failed = 0, ran = 0;
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && strcmp(argv[1], "all") != 0 && strcmp(argv[1], cases[i].name) != 0)
            continue;
        /* "all" runs the cases whose table row lists the setup, as meson does. */
        if (argc > 1 && strcmp(argv[1], "all") == 0 &&
            !(*setup ? listed(cases[i].setups, setup) : cases[i].setups[0] == '\0'))
            continue;
        ran++;
        printf("== %s%s%s\n", cases[i].name, *setup ? " / " : "", setup);
        fflush(stdout);
        bool ok = cases[i].fn();
        printf("== %s: %s\n", cases[i].name, ok ? "ok" : "FAILED");
        failed += !ok;
    }
    if (ran == 0) {
        fprintf(stderr, "no case named %s\n", argc > 1 ? argv[1] : "(none)");
        return 2;
    }
    return failed ? 1 : 0;
}
