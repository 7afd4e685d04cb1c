/* clattn-tune: searches, on one device and within a time budget, for the kernel settings that
 * run fastest there — clattn's GEMM tile, the fused kernel's block sizes and, on request,
 * CLBlast's SGEMM parameters — checks every candidate against the double-precision reference
 * before timing it, and stores the best in the device's tune file (clattn_tuning_save), which
 * contexts on that device, driver and library version then read. See --help. */
#define _POSIX_C_SOURCE 200809L
#include "clattn.h"
#include "ref.h"
#include "tool_common.h"

#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One context of the candidate's settings, with a queue, and buffers of the device. */
typedef struct bench_env {
    clattn_context *cc;
    cl_context context;
    cl_command_queue queue;
} bench_env;

static clattn_status env_open(bench_env *e, const clattn_kernel_config *k, int clblast)
{
    memset(e, 0, sizeof *e);
    clattn_context_params p = clattn_context_params_default();
    p.kernels = *k;
    p.clblast_tuning = clblast;
    clattn_status st = clattn_context_create(&p, &e->cc);
    if (st != CL_SUCCESS)
        return st;
    e->context = clattn_context_cl_context(e->cc);
    e->queue = clCreateCommandQueue(e->context, clattn_context_cl_device(e->cc), 0, &st);
    return st;
}

static void env_close(bench_env *e)
{
    if (e->queue) {
        clFinish(e->queue);
        clReleaseCommandQueue(e->queue);
    }
    clattn_context_destroy(&e->cc);
}

static cl_mem upload(bench_env *e, const float *host, size_t n)
{
    cl_int err;
    cl_mem b = clCreateBuffer(e->context, CL_MEM_READ_WRITE | (host ? CL_MEM_COPY_HOST_PTR : 0),
                              (n ? n : 1) * sizeof(float), (void *)host, &err);
    return err == CL_SUCCESS ? b : NULL;
}

/* --- the measurements: a projection, and attention ----------------------------------------------- */

/* One operation under measurement: what enqueues it, with its arguments. */
typedef struct op {
    clattn_status (*run)(bench_env *e, const struct op *op);
    const clattn_tensor *in[3], *out;
    const clattn_weights *weights;
    const clattn_sdpa_params *sdpa;
} op;

static clattn_status run_linear(bench_env *e, const op *o)
{
    return clattn_linear_prepared(e->cc, e->queue, o->in[0], o->weights, o->in[1], o->out, 0, NULL, NULL);
}

static clattn_status run_sdpa(bench_env *e, const op *o)
{
    return clattn_sdpa(e->cc, e->queue, o->in[0], o->in[1], o->in[2], o->out, o->sdpa, 0, NULL, NULL);
}

/* Runs the operation once; when `ref` is given, compares its n outputs in `out` with it; then
 * the median time of `reps` runs, in ms. A negative value: the result was wrong or a call failed. */
static double checked_median(bench_env *e, const op *o, cl_mem out, const double *ref, size_t n, int reps)
{
    clattn_status st = o->run(e, o);
    if (st == CL_SUCCESS && ref) {
        float *got = malloc(n * sizeof *got);
        st = got ? clEnqueueReadBuffer(e->queue, out, CL_TRUE, 0, n * sizeof *got, got, 0, NULL, NULL)
                 : CL_OUT_OF_HOST_MEMORY;
        double scale = 1;
        for (size_t i = 0; i < n; i++)
            scale = fmax(scale, fabs(ref[i]));
        if (st == CL_SUCCESS && !(tool_max_abs_diff(got, ref, n) <= 1e-4 * scale))
            st = -1;
        free(got);
    }
    if (st != CL_SUCCESS)
        return -1;
    double *t = malloc((size_t)reps * sizeof *t);
    if (!t)
        return -1;
    for (int i = 0; i < reps && st == CL_SUCCESS; i++) {
        const double t0 = tool_now();
        st = o->run(e, o);
        clFinish(e->queue);
        t[i] = tool_now() - t0;
    }
    const double ms = st == CL_SUCCESS ? 1e3 * tool_median(t, (size_t)reps) : -1;
    free(t);
    return ms;
}

static void release_all(cl_mem *b, int n)
{
    for (int i = 0; i < n; i++)
        if (b[i])
            clReleaseMemObject(b[i]);
}

/* Y = X·Wᵀ + b with prepared weights: median ms over `reps` runs, after a check against the
 * reference when `check` is set. A negative value: wrong or failed. */
static double time_linear(bench_env *e, size_t M, size_t N, size_t K, int reps, bool check)
{
    float *hx = tool_random_floats(M * K, 1, 1.0f), *hw = tool_random_floats(N * K, 2, 0.1f),
          *hb = tool_random_floats(N, 3, 0.1f);
    cl_mem b[4] = {upload(e, hx, M * K), upload(e, hw, N * K), upload(e, hb, N), upload(e, NULL, M * N)};
    const clattn_tensor X = clattn_tensor_bhtd(b[0], 0, 1, 1, M, K), W = clattn_tensor_bhtd(b[1], 0, 1, 1, N, K),
                        B = clattn_tensor_bhtd(b[2], 0, 1, 1, 1, N), Y = clattn_tensor_bhtd(b[3], 0, 1, 1, M, N);
    clattn_weights *pw = NULL;
    double ms = -1, *ref = NULL;
    if (check) {
        double *x = tool_to_double(hx, M * K), *w = tool_to_double(hw, N * K), *bias = tool_to_double(hb, N);
        ref = malloc(M * N * sizeof *ref);
        if (x && w && bias && ref)
            ref_linear(M, K, N, x, w, bias, ref);
        free(x), free(w), free(bias);
    }
    if (b[0] && b[1] && b[2] && b[3] && (!check || ref) &&
        clattn_weights_create(e->cc, e->queue, &W, 0, NULL, NULL, &pw) == CL_SUCCESS) {
        const op o = {.run = run_linear, .in = {&X, &B}, .out = &Y, .weights = pw};
        ms = checked_median(e, &o, b[3], ref, M * N, reps);
    }
    clattn_weights_destroy(&pw);
    release_all(b, 4);
    free(hx), free(hw), free(hb), free(ref);
    return ms;
}

/* Fused causal attention, one batch item of H heads: median ms, after the same kind of check. */
static double time_sdpa(bench_env *e, size_t H, size_t T, size_t D, int reps, bool check)
{
    const size_t n = H * T * D;
    float *hq = tool_random_floats(n, 4, 1.0f), *hk = tool_random_floats(n, 5, 1.0f),
          *hv = tool_random_floats(n, 6, 1.0f);
    cl_mem b[4] = {upload(e, hq, n), upload(e, hk, n), upload(e, hv, n), upload(e, NULL, n)};
    const clattn_tensor Q = clattn_tensor_bhtd(b[0], 0, 1, H, T, D), K = clattn_tensor_bhtd(b[1], 0, 1, H, T, D),
                        V = clattn_tensor_bhtd(b[2], 0, 1, H, T, D), O = clattn_tensor_bhtd(b[3], 0, 1, H, T, D);
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.mask.causal = CLATTN_CAUSAL_TOP_LEFT;
    p.path = CLATTN_PATH_FUSED;
    double ms = -1, *ref = NULL;
    if (check) {
        double *q = tool_to_double(hq, n), *k = tool_to_double(hk, n), *v = tool_to_double(hv, n);
        ref = malloc(n * sizeof *ref);
        if (q && k && v && ref)
            ref_sdpa(1, H, H, T, T, D, D, 1.0 / sqrt((double)D), 1, NULL, NULL, q, k, v, ref, NULL, NULL);
        free(q), free(k), free(v);
    }
    if (b[0] && b[1] && b[2] && b[3] && (!check || ref)) {
        const op o = {.run = run_sdpa, .in = {&Q, &K, &V}, .out = &O, .sdpa = &p};
        ms = checked_median(e, &o, b[3], ref, n, reps);
    }
    release_all(b, 4);
    free(hq), free(hk), free(hv), free(ref);
    return ms;
}

/* --- the search ------------------------------------------------------------------------------ */

typedef struct search {
    double deadline;
    int tried, wrong;
    bool quick; /* small shapes: a smoke run */
} search;

static void progress(const search *s, const char *what, const char *cand, double ms, double best)
{
    fprintf(stderr, "\r%-8s %-28s %9.3f ms  best %9.3f ms  %4.0f s left   ", what, cand, ms, best,
            fmax(0, s->deadline - tool_now()));
    fflush(stderr);
}

/* Time of a candidate's settings: a fresh context, a check, then the timed shapes. */
static double measure(search *s, const clattn_kernel_config *k, int clblast, bool gemm)
{
    bench_env e;
    double ms = -1;
    if (env_open(&e, k, clblast) == CL_SUCCESS) {
        /* First a small odd shape against the reference, then the shapes that count. */
        const bool ok = gemm ? time_linear(&e, 37, 130, 70, 1, true) >= 0
                             : time_sdpa(&e, 2, 37, 40, 1, true) >= 0;
        if (!ok) {
            s->wrong++;
        } else if (gemm) {
            const size_t M = s->quick ? 96 : 1024, N = s->quick ? 192 : 768, K = s->quick ? 96 : 768;
            ms = time_linear(&e, M, N, K, s->quick ? 3 : 7, false);
        } else {
            const size_t T = s->quick ? 128 : 1024;
            const double a = time_sdpa(&e, 4, T, 64, s->quick ? 3 : 7, false);
            const double b = time_sdpa(&e, 2, T, 128, s->quick ? 3 : 5, false);
            ms = a >= 0 && b >= 0 ? a + b : -1;
        }
    }
    env_close(&e);
    s->tried++;
    return ms;
}

/* The search's winner against the table's settings again, in alternating measurements (3 each):
 * kept only when its median beats the table's by more than 3 %, so that noise found in the
 * search is not stored. Updates *table_ms and *best_ms with the medians. */
static bool confirm(search *s, const clattn_kernel_config *table, const clattn_kernel_config *best,
                    int clblast, bool gemm, double *table_ms, double *best_ms)
{
    double t[3], b[3];
    for (int i = 0; i < 3; i++) {
        t[i] = measure(s, table, 0, gemm);
        b[i] = measure(s, best, clblast, gemm);
    }
    *table_ms = tool_median(t, 3);
    *best_ms = tool_median(b, 3);
    return *best_ms >= 0 && *table_ms >= 0 && *best_ms < 0.97 * *table_ms;
}

static void usage(void)
{
    printf("usage: clattn-tune [options]\n"
           "Searches, on one device and within a time budget, for the settings that run fastest\n"
           "there: clattn's GEMM tile (CPU devices), the fused kernel's block sizes and, with\n"
           "--clblast, CLBlast's SGEMM parameters. Every candidate is checked against the\n"
           "double-precision reference before it is timed. The best are stored in the device's\n"
           "tune file in clattn's disk cache directory, which new contexts on the same device,\n"
           "driver and library version read (context params and environment still win).\n"
           "  --seconds S     time budget (default 120)\n"
           "  --device SPEC   as CLATTN_DEVICE: P:D indices or a piece of the device name\n"
           "  --clblast       also search CLBlast's Xgemm parameters (applied by contexts created\n"
           "                  with clattn_context_params.clblast_tuning)\n"
           "  --quick         small shapes (a smoke run: figures not meaningful)\n"
           "  --dry-run       print what was found, store nothing\n");
}

/* Xgemm parameter sets to try: CLBlast's defaults, and sets shaped for wide vector units. */
static const char *clblast_candidates[] = {
    "GEMMK=0 KREG=1 KWG=16 KWI=2 MDIMA=8 MDIMC=8 MWG=32 NDIMB=8 NDIMC=8 NWG=64 SA=0 SB=0 STRM=0 STRN=0 VWM=4 VWN=1",
    "GEMMK=0 KREG=1 KWG=32 KWI=2 MDIMA=8 MDIMC=8 MWG=64 NDIMB=8 NDIMC=8 NWG=64 SA=0 SB=0 STRM=0 STRN=0 VWM=8 VWN=8",
    "GEMMK=0 KREG=1 KWG=16 KWI=2 MDIMA=4 MDIMC=4 MWG=64 NDIMB=4 NDIMC=4 NWG=64 SA=0 SB=0 STRM=0 STRN=0 VWM=16 VWN=16",
    "GEMMK=0 KREG=1 KWG=32 KWI=8 MDIMA=16 MDIMC=16 MWG=128 NDIMB=16 NDIMC=16 NWG=128 SA=1 SB=1 STRM=0 STRN=0 VWM=4 VWN=4",
    "GEMMK=0 KREG=1 KWG=16 KWI=2 MDIMA=8 MDIMC=8 MWG=64 NDIMB=16 NDIMC=16 NWG=128 SA=1 SB=1 STRM=1 STRN=1 VWM=8 VWN=8",
};

int main(int argc, char **argv)
{
    double seconds = 120;
    bool do_clblast = false, dry = false, quick = false;
    static const struct option opts[] = {
        {"seconds", required_argument, 0, 's'}, {"device", required_argument, 0, 'd'},
        {"clblast", no_argument, 0, 'c'},       {"dry-run", no_argument, 0, 'n'},
        {"quick", no_argument, 0, 'q'},         {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's': seconds = atof(optarg); break;
        case 'd': setenv("CLATTN_DEVICE", optarg, 1); break;
        case 'c': do_clblast = true; break;
        case 'n': dry = true; break;
        case 'q': quick = true; break;
        case 'h': usage(); return 0;
        default: usage(); return 2;
        }
    }
    /* The search sets every setting explicitly: an environment override would mask it. */
    unsetenv("CLATTN_FLASH_VARIANT"), unsetenv("CLATTN_FLASH_BLOCK_K"), unsetenv("CLATTN_FLASH_WG");
    unsetenv("CLATTN_GEMM_ENGINE"), unsetenv("CLATTN_GEMM_TILE");
    bench_env e0;
    const clattn_kernel_config none = {0};
    clattn_status st = env_open(&e0, &none, 0);
    if (st != CL_SUCCESS) {
        fprintf(stderr, "clattn-tune: %s\n", clattn_status_name(st));
        return 1;
    }
    clattn_device_info info;
    clattn_context_device_info(e0.cc, &info);
    const char *cache_dir = "";
    clattn_context_config(e0.cc, NULL, &cache_dir);
    /* Contexts fill what their params leave unset from the tune file: while searching, the file
     * must say "the table's" everywhere, and it is put back if nothing is stored. */
    clattn_tuning previous, neutral;
    clattn_tuning_load(e0.cc, &previous);
    memset(&neutral, 0, sizeof neutral);
    clattn_tuning_save(e0.cc, &neutral);
    const bool cpu = (info.type & CL_DEVICE_TYPE_CPU) != 0;
    printf("clattn-tune on %s (%s), driver %s, %.0f s budget\n", info.name, info.platform_name,
           info.driver_version, seconds);
    search s = {tool_now() + seconds, 0, 0, quick};
    const double t_start = tool_now();
    clattn_tuning found;
    memset(&found, 0, sizeof found);

    /* 1. clattn's GEMM tile, where clattn's engine runs the products (CPU devices). */
    clattn_kernel_config k = {0};
    k.gemm_engine = CLATTN_GEMM_ENGINE_CLATTN;
    double gemm_table = -1, gemm_best = -1;
    if (cpu) {
        gemm_table = gemm_best = measure(&s, &k, 0, true);
        const double until = tool_now() + 0.45 * seconds;
        static const unsigned rows[] = {6, 7, 5, 8, 4}, vecs[] = {4, 3, 5, 2}, blocks[] = {4, 2, 8, 1};
        for (size_t b = 0; b < 4 && tool_now() < until; b++)
            for (size_t v = 0; v < 4 && tool_now() < until; v++)
                for (size_t r = 0; r < 5 && tool_now() < until; r++) {
                    if (rows[r] * vecs[v] + vecs[v] + 2 > 32) /* past 32 vector registers */
                        continue;
                    k.gemm_rows = rows[r], k.gemm_vectors = vecs[v], k.gemm_blocks = blocks[b];
                    const double ms = measure(&s, &k, 0, true);
                    char name[64];
                    snprintf(name, sizeof name, "tile %ux%ux%u", rows[r], vecs[v], blocks[b]);
                    progress(&s, "gemm", name, ms, gemm_best);
                    if (ms >= 0 && (gemm_best < 0 || ms < gemm_best)) {
                        gemm_best = ms;
                        found.kernels.gemm_rows = rows[r], found.kernels.gemm_vectors = vecs[v];
                        found.kernels.gemm_blocks = blocks[b];
                    }
                }
        /* Kept only when it beats the table by more than noise. */
        clattn_kernel_config table = {0}, best = found.kernels;
        table.gemm_engine = best.gemm_engine = CLATTN_GEMM_ENGINE_CLATTN;
        if (!found.kernels.gemm_rows ||
            !confirm(&s, &table, &best, 0, true, &gemm_table, &gemm_best)) {
            found.kernels.gemm_rows = found.kernels.gemm_vectors = found.kernels.gemm_blocks = 0;
            gemm_best = gemm_table;
        }
    }

    /* 2. The fused kernel's blocks (and work-group, for the GPU variant). */
    clattn_kernel_config f = {0};
    double flash_table = measure(&s, &f, 0, false);
    double flash_best = flash_table;
    const double until = tool_now() + (do_clblast ? 0.7 : 1.0) * (s.deadline - tool_now());
    static const unsigned cpu_blocks[] = {64, 32, 48, 96, 128, 80};
    static const unsigned gpu_wg[] = {64, 128, 32, 256}, gpu_blocks[] = {32, 16, 64};
    for (size_t i = 0; i < (cpu ? 6u : 12u) && tool_now() < until; i++) {
        f.flash_block_k = cpu ? cpu_blocks[i] : gpu_blocks[i % 3];
        f.flash_wg = cpu ? 0 : gpu_wg[i / 3];
        const double ms = measure(&s, &f, 0, false);
        char name[64];
        snprintf(name, sizeof name, "block_k %u wg %u", f.flash_block_k, f.flash_wg);
        progress(&s, "fused", name, ms, flash_best);
        if (ms >= 0 && (flash_best < 0 || ms < flash_best)) {
            flash_best = ms;
            found.kernels.flash_block_k = f.flash_block_k;
            found.kernels.flash_wg = f.flash_wg;
        }
    }
    clattn_kernel_config fbest = {0};
    fbest.flash_block_k = found.kernels.flash_block_k;
    fbest.flash_wg = found.kernels.flash_wg;
    f = (clattn_kernel_config){0};
    double flash_table_again = flash_table;
    if (!found.kernels.flash_block_k ||
        !confirm(&s, &f, &fbest, 0, false, &flash_table_again, &flash_best)) {
        found.kernels.flash_block_k = found.kernels.flash_wg = 0;
        flash_best = flash_table = flash_table_again;
    } else {
        flash_table = flash_table_again;
    }

    /* 3. CLBlast's Xgemm parameters: each set goes through a tune file (CLBlast takes them
     * process-wide, and a context applies them when asked to). */
    double blas_table = -1, blas_best = -1;
    if (do_clblast) {
        clattn_kernel_config b = {0};
        b.gemm_engine = CLATTN_GEMM_ENGINE_CLBLAST;
        blas_table = blas_best = measure(&s, &b, 0, true);
        clattn_tuning trial = found;
        for (size_t i = 0; i < sizeof clblast_candidates / sizeof clblast_candidates[0] && tool_now() < s.deadline; i++) {
            snprintf(trial.clblast_xgemm, sizeof trial.clblast_xgemm, "%s", clblast_candidates[i]);
            if (clattn_tuning_save(e0.cc, &trial) != CL_SUCCESS)
                break;
            const double ms = measure(&s, &b, 1, true);
            char name[64];
            snprintf(name, sizeof name, "xgemm set %zu", i + 1);
            progress(&s, "clblast", name, ms, blas_best);
            if (ms >= 0 && (blas_best < 0 || ms < blas_best)) {
                blas_best = ms;
                snprintf(found.clblast_xgemm, sizeof found.clblast_xgemm, "%s", clblast_candidates[i]);
            }
        }
        /* CLBlast keeps overrides process-wide: the table's time cannot be measured again after
         * the first set is applied, so a set must beat the first measurement by more than 3 %. */
        if (blas_best > 0.97 * blas_table) {
            found.clblast_xgemm[0] = '\0';
            blas_best = blas_table;
        }
    }
    fprintf(stderr, "\r%100s\r", "");

    printf("%d candidates in %.0f s, %d refused for a wrong result\n", s.tried, tool_now() - t_start, s.wrong);
    printf("%-10s %-32s %12s %12s %8s\n", "setting", "found", "table ms", "found ms", "gain");
    char tile[48] = "the table's";
    if (found.kernels.gemm_rows)
        snprintf(tile, sizeof tile, "%ux%ux%u", found.kernels.gemm_rows, found.kernels.gemm_vectors,
                 found.kernels.gemm_blocks);
    if (cpu)
        printf("%-10s %-32s %12.3f %12.3f %7.2fx\n", "gemm tile", tile, gemm_table, gemm_best,
               gemm_table / gemm_best);
    char fb[48] = "the table's";
    if (found.kernels.flash_block_k)
        snprintf(fb, sizeof fb, "block_k %u wg %u", found.kernels.flash_block_k, found.kernels.flash_wg);
    printf("%-10s %-32s %12.3f %12.3f %7.2fx\n", "fused", fb, flash_table, flash_best,
           flash_table / flash_best);
    if (do_clblast)
        printf("%-10s %-32s %12.3f %12.3f %7.2fx\n", "clblast",
               found.clblast_xgemm[0] ? "a tuned Xgemm set" : "CLBlast's own", blas_table,
               blas_best, blas_table / blas_best);
    if (dry) {
        clattn_tuning_save(e0.cc, &previous); /* what was there */
        printf("dry run: nothing stored\n");
    } else if ((st = clattn_tuning_save(e0.cc, &found)) != CL_SUCCESS) {
        printf("not stored: %s (disk cache directory \"%s\")\n", clattn_status_name(st), cache_dir);
    } else {
        printf("stored in the tune file of this device in %s\n", cache_dir);
    }
    env_close(&e0);
    return st == CL_SUCCESS ? 0 : 1;
}
