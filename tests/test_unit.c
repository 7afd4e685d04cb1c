/* Status codes, the kernel table, context lifetime and device selection, kernel build failures. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The setups every case of this file runs under (see harness.h). */
#define SETUPS ""

static bool status_names(void)
{
    bool ok = true;
    /* Every library code has its own symbolic name and a message; codes are unique. */
    static const struct { clattn_status code; const char *name; } rows[] = {
#define ROW(name, value, msg) {value, #name},
        CLATTN_STATUS_LIST(ROW)
#undef ROW
    };
    const size_t n = sizeof rows / sizeof rows[0];
    for (size_t i = 0; i < n; i++) {
        EXPECT(strcmp(clattn_status_name(rows[i].code), rows[i].name) == 0);
        EXPECT(strlen(clattn_status_string(rows[i].code)) > 0);
        EXPECT(rows[i].code >= 0); /* never where OpenCL's and its extensions' codes are */
        for (size_t j = 0; j < i; j++)
            EXPECT(rows[i].code != rows[j].code);
    }
    EXPECT(strcmp(clattn_status_name(CL_OUT_OF_RESOURCES), "CL_OUT_OF_RESOURCES") == 0);
    EXPECT(strcmp(clattn_status_name(CL_INVALID_MEM_OBJECT), "CL_INVALID_MEM_OBJECT") == 0);
    EXPECT(strcmp(clattn_status_name(-987654), "CLATTN_UNKNOWN_STATUS") == 0);
    EXPECT(clattn_status_string(-987654) != NULL);
    char ver[32];
    snprintf(ver, sizeof ver, "%d.%d.%d", CLATTN_VERSION_MAJOR, CLATTN_VERSION_MINOR,
             CLATTN_VERSION_PATCH);
    EXPECT(strcmp(clattn_version(), ver) == 0);
    EXPECT(clattn_dtype_size(CLATTN_F32) == 4 && clattn_dtype_size(CLATTN_F16) == 2);
    /* The sizes a binding checks at load time are the ones this header compiles to. */
#define EXPECT_SIZE(type) EXPECT(clattn_struct_size(#type) == sizeof(type))
    EXPECT_SIZE(clattn_tensor);
    EXPECT_SIZE(clattn_kernel_config);
    EXPECT_SIZE(clattn_context_params);
    EXPECT_SIZE(clattn_device_info);
    EXPECT_SIZE(clattn_tuning);
    EXPECT_SIZE(clattn_mask_params);
    EXPECT_SIZE(clattn_logit_params);
    EXPECT_SIZE(clattn_sdpa_params);
    EXPECT_SIZE(clattn_rope_params);
    EXPECT_SIZE(clattn_mha_params);
    EXPECT_SIZE(clattn_mha_forward_params);
    EXPECT_SIZE(clattn_kv_cache_params);
    EXPECT_SIZE(clattn_kv_attend_params);
#undef EXPECT_SIZE
    EXPECT(clattn_struct_size("clattn_context") == 0); /* opaque */
    EXPECT(clattn_struct_size("clattn_sdpa_param") == 0 && clattn_struct_size(NULL) == 0);
    return ok;
}

static bool kernel_table_builds(void)
{
    bool ok = true;
    static const char *want[] = {"bias", "fill", "mask", "softmax"};
    EXPECT(clattn_kernel_count() >= 4);
    EXPECT(clattn_kernel_name(clattn_kernel_count()) == NULL);
    for (size_t w = 0; w < 4; w++) {
        bool found = false;
        for (size_t i = 0; i < clattn_kernel_count(); i++)
            found |= strcmp(clattn_kernel_name(i), want[w]) == 0;
        EXPECT(found);
    }
    test_env e;
    env_open_default(&e);
    for (size_t k = 0; k < clattn_kernel_count(); k++)
        EXPECT_STATUS(clattn_kernel_build(e.cc, clattn_kernel_name(k)), CLATTN_SUCCESS);
    clattn_device_info info;
    EXPECT_STATUS(clattn_context_device_info(e.cc, &info), CLATTN_SUCCESS);
    printf("device: %s (%s), driver %s, max wg %zu, local %llu B, max alloc %llu B\n", info.name,
           info.platform_name, info.driver_version, info.max_work_group_size,
           (unsigned long long)info.local_mem_size, (unsigned long long)info.max_mem_alloc_size);
    EXPECT(info.name[0] != '\0' && info.max_work_group_size > 0 && info.max_mem_alloc_size > 0);
    env_close(&e);
    return ok;
}

static bool caller_context_survives(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    cl_context c = e.context;
    /* env_open's clattn context holds one reference of its own. */
    cl_uint with = ctx_refs(c);
    clattn_context_destroy(&e.cc);
    EXPECT(e.cc == NULL);
    EXPECT(ctx_refs(c) == with - 1);
    /* Still usable by its owner. */
    cl_int err;
    cl_mem b = clCreateBuffer(c, CL_MEM_READ_WRITE, 64, NULL, &err);
    EXPECT(err == CL_SUCCESS);
    if (b)
        clReleaseMemObject(b);
    clattn_context_destroy(NULL); /* NULL-safe */
    clattn_context *none = NULL;
    clattn_context_destroy(&none);
    /* A device without its context is an error; so is a NULL out pointer. */
    clattn_context_params p = clattn_context_params_default();
    p.device = e.device;
    clattn_context *cc = (clattn_context *)&p;
    EXPECT_STATUS(clattn_context_create(&p, &cc), CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT(cc == NULL);
    EXPECT_STATUS(clattn_context_create(NULL, NULL), CLATTN_ERROR_INVALID_ARGUMENT);
    /* The caller's context without naming the device: it holds exactly one. */
    p = clattn_context_params_default();
    p.context = c;
    EXPECT_STATUS(clattn_context_create(&p, &cc), CLATTN_SUCCESS);
    EXPECT(clattn_context_cl_device(cc) == e.device);
    clattn_context_destroy(&cc);
    env_close(&e);
    return ok;
}

static bool device_selection(void)
{
    bool ok = true;
    clattn_context *cc = NULL;
    setenv("CLATTN_DEVICE", "0:0", 1);
    EXPECT_STATUS(clattn_context_create(NULL, &cc), CLATTN_SUCCESS);
    clattn_device_info info;
    if (cc) {
        clattn_context_device_info(cc, &info);
        clattn_context_destroy(&cc);
        /* The same device by a piece of its name, in another case. */
        char piece[8] = {0};
        for (size_t i = 0; i < 4 && info.name[i]; i++)
            piece[i] = (char)((info.name[i] >= 'a' && info.name[i] <= 'z') ? info.name[i] - 32 : info.name[i]);
        setenv("CLATTN_DEVICE", piece, 1);
        EXPECT_STATUS(clattn_context_create(NULL, &cc), CLATTN_SUCCESS);
        clattn_context_destroy(&cc);
    }
    setenv("CLATTN_DEVICE", "no-such-device-anywhere", 1);
    EXPECT_STATUS(clattn_context_create(NULL, &cc), CLATTN_ERROR_DEVICE_NOT_FOUND);
    setenv("CLATTN_DEVICE", "99:0", 1);
    EXPECT_STATUS(clattn_context_create(NULL, &cc), CLATTN_ERROR_DEVICE_NOT_FOUND);
    EXPECT(cc == NULL);
    unsetenv("CLATTN_DEVICE");
    return ok;
}

static char last_log[8192];
static void capture(void *user, clattn_log_level level, const char *msg)
{
    (*(int *)user)++;
    (void)level;
    snprintf(last_log, sizeof last_log, "%s", msg);
}

/* An override the device cannot run (the GPU variant with 4096-key blocks of K and V in local
 * memory) is refused before anything runs on the fused path, and AUTO runs the call unfused. */
static bool override_the_device_cannot_run(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    clattn_context_params p = clattn_context_params_default();
    p.context = e.context;
    p.device = e.device;
    p.kernels.flash_variant = CLATTN_FLASH_VARIANT_GPU;
    p.kernels.flash_block_k = 4096;
    p.kernels.flash_wg = 64;
    clattn_context *cc = NULL;
    CL_OK(clattn_context_create(&p, &cc));
    uint64_t seed = 4;
    view_buf Q = vb_new(&e, LAYOUT_BHTD, 1, 2, 33, 128, 0, 0, &seed, true);
    view_buf O = vb_new(&e, LAYOUT_BHTD, 1, 2, 33, 128, 0, 0, &seed, false);
    view_buf R = vb_new(&e, LAYOUT_BHTD, 1, 2, 33, 128, 0, 0, &seed, false);
    clattn_sdpa_params sp = clattn_sdpa_params_default();
    sp.mask.causal = CLATTN_CAUSAL_TOP_LEFT;
    sp.path = CLATTN_PATH_FUSED;
    cl_event ev = NULL;
    EXPECT_STATUS(clattn_sdpa_prepare(cc, &Q.t, &Q.t, &Q.t, &O.t, &sp), CLATTN_ERROR_UNSUPPORTED_DEVICE);
    EXPECT_STATUS(clattn_sdpa(cc, e.queue, &Q.t, &Q.t, &Q.t, &O.t, &sp, 0, NULL, &ev),
                  CLATTN_ERROR_UNSUPPORTED_DEVICE);
    EXPECT(ev == NULL && vb_same(&e, &O));
    sp.path = CLATTN_PATH_AUTO;
    EXPECT_STATUS(clattn_sdpa(cc, e.queue, &Q.t, &Q.t, &Q.t, &O.t, &sp, 0, NULL, NULL), CLATTN_SUCCESS);
    sp.path = CLATTN_PATH_UNFUSED;
    EXPECT_STATUS(clattn_sdpa(cc, e.queue, &Q.t, &Q.t, &Q.t, &R.t, &sp, 0, NULL, NULL), CLATTN_SUCCESS);
    float *a = malloc(O.elems * 4), *b = malloc(R.elems * 4);
    vb_read_all(&e, &O, a);
    vb_read_all(&e, &R, b);
    EXPECT(memcmp(a, b, O.elems * 4) == 0); /* AUTO ran the unfused path */
    free(a), free(b);
    vb_free(&Q), vb_free(&O), vb_free(&R);
    clattn_context_destroy(&cc);
    env_close(&e);
    return ok;
}

/* A test context over e (opened here) whose kernel directory holds an empty prelude and one
 * file; its log goes to capture(), which counts the calls in *calls. */
static clattn_context *context_with_only(test_env *e, char *dir, const char *file,
                                         const char *text, int *calls)
{
    kernel_dir_new(dir);
    kernel_dir_write(dir, "prelude.cl", "");
    kernel_dir_write(dir, file, text);
    env_open(e, false);
    return kernel_dir_context(e, dir, capture, calls);
}

static bool build_failure_is_reported(void)
{
    bool ok = true;
    /* A kernel directory (read when a context is created) whose softmax.cl does not compile,
     * with an empty prelude and no mask.cl. */
    char dir[64];
    test_env e;
    int calls = 0;
    clattn_context *cc = context_with_only(
        &e, dir, "softmax.cl", "__kernel void softmax_rows(__global float *x) { not OpenCL C; }\n",
        &calls);
    uint64_t seed = 1;
    view_buf S = vb_new(&e, LAYOUT_BHTD, 1, 1, 4, 8, 0, 0, &seed, true);
    view_buf P = vb_new(&e, LAYOUT_BHTD, 1, 1, 4, 8, 0, 0, &seed, false);
    cl_event ev = NULL;
    EXPECT_STATUS(clattn_softmax(cc, e.queue, &S.t, &P.t, NULL, 0, NULL, &ev), CLATTN_ERROR_BUILD_FAILED);
    EXPECT(ev == NULL);
    EXPECT(calls == 1);
    EXPECT(strstr(last_log, "softmax") != NULL);
    printf("log received (%d call(s)), starting: %.120s\n", calls, last_log);
    /* The refusal is remembered: the same answer again, without a second build. */
    EXPECT_STATUS(clattn_softmax(cc, e.queue, &S.t, &P.t, NULL, 0, NULL, &ev), CLATTN_ERROR_BUILD_FAILED);
    EXPECT(calls == 1);
    /* A kernel file that is missing altogether. */
    clattn_mask_params mp = clattn_mask_params_default();
    mp.causal = CLATTN_CAUSAL_TOP_LEFT;
    EXPECT_STATUS(clattn_mask(cc, e.queue, &S.t, &mp, 0, NULL, &ev), CLATTN_ERROR_KERNEL_NOT_FOUND);
    float back[32];
    buf_read(&e, P.t.buffer, 0, back, sizeof back);
    EXPECT(memcmp(back, P.host, sizeof back) == 0);
    clattn_context_destroy(&cc);
    /* A context created without the directory has the library's own kernels. */
    clattn_context_params p = clattn_context_params_default();
    p.context = e.context;
    p.device = e.device;
    CL_OK(clattn_context_create(&p, &cc));
    EXPECT_STATUS(clattn_softmax(cc, e.queue, &S.t, &P.t, NULL, 0, NULL, &ev), CLATTN_SUCCESS);
    if (ev) {
        clWaitForEvents(1, &ev);
        clReleaseEvent(ev);
    }
    buf_read(&e, P.t.buffer, 0, back, sizeof back);
    double row = 0;
    for (int j = 0; j < 8; j++)
        row += back[j];
    EXPECT(row > 0.999 && row < 1.001);
    vb_free(&S), vb_free(&P);
    clattn_context_destroy(&cc);
    env_close(&e);
    kernel_dir_remove(dir);
    return ok;
}

static bool context_config_precedence(void)
{
    bool ok = true;
    clattn_context *cc = NULL;
    clattn_kernel_config k;
    const char *dir = NULL;
    /* The environment fills what the params leave at zero; the params win. */
    setenv("CLATTN_FLASH_VARIANT", "gpu", 1);
    setenv("CLATTN_FLASH_BLOCK_K", "32", 1);
    setenv("CLATTN_CACHE_DIR", "/tmp/clattn-config-test", 1);
    clattn_context_params p = clattn_context_params_default();
    p.kernels.flash_variant = CLATTN_FLASH_VARIANT_CPU;
    EXPECT_STATUS(clattn_context_create(&p, &cc), CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_context_config(cc, &k, &dir), CLATTN_SUCCESS);
    EXPECT(k.flash_variant == CLATTN_FLASH_VARIANT_CPU && k.flash_block_k == 32 && k.flash_wg == 0);
    EXPECT(dir && strcmp(dir, "/tmp/clattn-config-test") == 0);
    clattn_context_destroy(&cc);
    /* Read once, when the context is created: later changes do not reach it. */
    p = clattn_context_params_default();
    p.cache_dir = "/tmp/clattn-config-params";
    EXPECT_STATUS(clattn_context_create(&p, &cc), CLATTN_SUCCESS);
    setenv("CLATTN_FLASH_VARIANT", "cpu", 1);
    EXPECT_STATUS(clattn_context_config(cc, &k, &dir), CLATTN_SUCCESS);
    EXPECT(k.flash_variant == CLATTN_FLASH_VARIANT_GPU);
    EXPECT(dir && strcmp(dir, "/tmp/clattn-config-params") == 0);
    clattn_context_destroy(&cc);
    unsetenv("CLATTN_FLASH_VARIANT");
    unsetenv("CLATTN_FLASH_BLOCK_K");
    /* Off wins over every directory; "off" in the environment too. */
    p = clattn_context_params_default();
    p.cache_dir = "/tmp/clattn-config-params";
    p.disk_cache_off = 1;
    EXPECT_STATUS(clattn_context_create(&p, &cc), CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_context_config(cc, &k, &dir), CLATTN_SUCCESS);
    EXPECT(dir && dir[0] == '\0');
    EXPECT(k.flash_variant == CLATTN_FLASH_VARIANT_AUTO && k.flash_block_k == 0);
    clattn_context_destroy(&cc);
    setenv("CLATTN_CACHE_DIR", "off", 1);
    EXPECT_STATUS(clattn_context_create(NULL, &cc), CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_context_config(cc, NULL, &dir), CLATTN_SUCCESS);
    EXPECT(dir && dir[0] == '\0');
    clattn_context_destroy(&cc);
    unsetenv("CLATTN_CACHE_DIR");
    /* Values out of range are refused, and no context comes back. */
    const struct { int variant; uint32_t block_k, wg, reserved; int log_level; const char *dir; } bad[] = {
        {7, 0, 0, 0, CLATTN_LOG_WARN, NULL},  {-1, 0, 0, 0, CLATTN_LOG_WARN, NULL},
        {0, 5000, 0, 0, CLATTN_LOG_WARN, NULL}, {0, 0, 4097, 0, CLATTN_LOG_WARN, NULL},
        {0, 0, 0, 1, CLATTN_LOG_WARN, NULL},  {0, 0, 0, 0, -1, NULL},
        {0, 0, 0, 0, 4, NULL},                {0, 0, 0, 0, 99, NULL},
        {0, 0, 0, 0, CLATTN_LOG_WARN, ""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = clattn_context_params_default();
        p.kernels.flash_variant = (clattn_flash_variant)bad[i].variant;
        p.kernels.flash_block_k = bad[i].block_k;
        p.kernels.flash_wg = bad[i].wg;
        p.kernels.reserved[8] = bad[i].reserved;
        p.log_level = (clattn_log_level)bad[i].log_level;
        p.cache_dir = bad[i].dir;
        cc = (clattn_context *)&p;
        EXPECT_STATUS(clattn_context_create(&p, &cc), CLATTN_ERROR_INVALID_ARGUMENT);
        EXPECT(cc == NULL);
    }
    /* The GEMM tile: all three members or none, each in range. */
    const uint32_t tiles[][3] = {{4, 0, 0}, {0, 2, 2}, {17, 2, 2}, {4, 9, 2}, {4, 2, 65}};
    for (size_t i = 0; i < sizeof tiles / sizeof tiles[0]; i++) {
        p = clattn_context_params_default();
        p.kernels.gemm_rows = tiles[i][0];
        p.kernels.gemm_vectors = tiles[i][1];
        p.kernels.gemm_blocks = tiles[i][2];
        EXPECT_STATUS(clattn_context_create(&p, &cc), CLATTN_ERROR_INVALID_ARGUMENT);
    }
    p = clattn_context_params_default();
    p.kernels.gemm_engine = (clattn_gemm_engine)3;
    EXPECT_STATUS(clattn_context_create(&p, &cc), CLATTN_ERROR_INVALID_ARGUMENT);
    setenv("CLATTN_GEMM_TILE", "5x3x2", 1);
    EXPECT_STATUS(clattn_context_create(NULL, &cc), CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_context_config(cc, &k, NULL), CLATTN_SUCCESS);
    EXPECT(k.gemm_rows == 5 && k.gemm_vectors == 3 && k.gemm_blocks == 2);
    clattn_context_destroy(&cc);
    setenv("CLATTN_GEMM_TILE", "5x3", 1); /* malformed: ignored */
    EXPECT_STATUS(clattn_context_create(NULL, &cc), CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_context_config(cc, &k, NULL), CLATTN_SUCCESS);
    EXPECT(k.gemm_rows == 0);
    clattn_context_destroy(&cc);
    unsetenv("CLATTN_GEMM_TILE");
    EXPECT_STATUS(clattn_context_config(NULL, &k, &dir), CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT(clattn_abi_version() == CLATTN_ABI_VERSION);
    return ok;
}

static bool kernel_arguments_checked(void)
{
    bool ok = true;
    /* A fill kernel with one argument more than the host passes: the launch is refused as the
     * library's own inconsistency, before anything runs, and the log says which kernel. */
    char dir[64];
    test_env e;
    int calls = 0;
    clattn_context *cc = context_with_only(
        &e, dir, "fill.cl",
        "__kernel void fill(__global float *x, ulong off, ulong4 st, ulong d1, float v,\n"
        "                   int extra) { x[off] = v + extra; }\n",
        &calls);
    /* No keys: the weighted sum fills its output with zeros. */
    uint64_t seed = 2;
    view_buf P = vb_new(&e, LAYOUT_BHTD, 1, 1, 4, 0, 0, 1, &seed, true);
    view_buf V = vb_new(&e, LAYOUT_BHTD, 1, 1, 0, 8, 0, 1, &seed, true);
    view_buf O = vb_new(&e, LAYOUT_BHTD, 1, 1, 4, 8, 0, 0, &seed, false);
    cl_event ev = NULL;
    EXPECT_STATUS(clattn_weighted_sum(cc, e.queue, &P.t, &V.t, &O.t, 0, NULL, &ev), CLATTN_ERROR_INTERNAL);
    EXPECT(ev == NULL);
    EXPECT(calls == 1 && strstr(last_log, "fill") != NULL);
    printf("log: %s\n", last_log);
    EXPECT(vb_same(&e, &O));
    vb_free(&P), vb_free(&V), vb_free(&O);
    clattn_context_destroy(&cc);
    env_close(&e);
    kernel_dir_remove(dir);
    return ok;
}

int main(int argc, char **argv)
{
    static const test_case cases[] = {
        CASE(status_names),
        CASE(kernel_table_builds),
        CASE(caller_context_survives),
        CASE(device_selection),
        CASE(build_failure_is_reported),
        CASE(context_config_precedence),
        CASE(kernel_arguments_checked),
        CASE(override_the_device_cannot_run),
    };
    return run_cases(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
