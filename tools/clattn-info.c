/* clattn-info: every OpenCL platform and device, the capabilities clattn uses, whether each
 * clattn kernel builds there (and how long it takes), and whether a small attention call gives
 * the right answer. Exits 0 when at least one device works, 1 otherwise. */
#define _POSIX_C_SOURCE 200809L
#include "clattn.h"
#include "ref.h"
#include "tool_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void print_log(void *user, clattn_log_level level, const char *msg)
{
    (void)user;
    (void)level;
    /* Build logs can be long: the first lines tell what went wrong. */
    printf("      | %.600s\n", msg);
}

/* A causal 1x2x9x16 attention on the device, compared with the double-precision reference. */
static int smoke_test(clattn_context *cc, cl_context c, cl_device_id d, double *err_out)
{
    enum { B = 1, H = 2, L = 9, D = 16, N = B * H * L * D };
    float host[3 * N], out[N];
    double q[N], k[N], v[N], ref[N];
    unsigned s = 7;
    for (int i = 0; i < 3 * N; i++) {
        s = s * 1103515245u + 12345u;
        host[i] = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    for (int i = 0; i < N; i++)
        q[i] = host[i], k[i] = host[N + i], v[i] = host[2 * N + i];
    cl_int err;
    cl_command_queue qu = clCreateCommandQueue(c, d, 0, &err);
    if (err != CL_SUCCESS)
        return err;
    cl_mem in = clCreateBuffer(c, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof host, host, &err);
    cl_mem ob = clCreateBuffer(c, CL_MEM_READ_WRITE, sizeof out, NULL, &err);
    clattn_tensor tq = clattn_tensor_bhtd(in, 0, B, H, L, D), tk = clattn_tensor_bhtd(in, N, B, H, L, D),
                  tv = clattn_tensor_bhtd(in, 2 * N, B, H, L, D), to = clattn_tensor_bhtd(ob, 0, B, H, L, D);
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.mask.causal = CLATTN_CAUSAL_TOP_LEFT;
    clattn_status st = clattn_sdpa(cc, qu, &tq, &tk, &tv, &to, &p, 0, NULL, NULL);
    if (st == CL_SUCCESS)
        st = clEnqueueReadBuffer(qu, ob, CL_TRUE, 0, sizeof out, out, 0, NULL, NULL);
    if (st == CL_SUCCESS) {
        ref_sdpa(B, H, H, L, L, D, D, 1.0 / sqrt((double)D), 1, NULL, NULL, q, k, v, ref, NULL, NULL);
        *err_out = tool_max_abs_diff(out, ref, N);
    }
    clReleaseMemObject(in);
    clReleaseMemObject(ob);
    clReleaseCommandQueue(qu);
    return st;
}

static int report_device(cl_uint pi, cl_uint di, cl_device_id dev)
{
    cl_int err;
    cl_context c = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
    if (err != CL_SUCCESS) {
        printf("  [%u:%u] cannot create a context: %s\n", pi, di, clattn_status_name(err));
        return 0;
    }
    clattn_context_params cp = clattn_context_params_default();
    cp.context = c;
    cp.device = dev;
    cp.log = print_log;
    cp.log_level = CLATTN_LOG_ERROR;
    clattn_context *cc = NULL;
    clattn_status st = clattn_context_create(&cp, &cc);
    if (st != CL_SUCCESS) {
        printf("  [%u:%u] clattn_context_create: %s\n", pi, di, clattn_status_name(st));
        clReleaseContext(c);
        return 0;
    }
    clattn_device_info i;
    clattn_context_device_info(cc, &i);
    const char *type = (i.type & CL_DEVICE_TYPE_GPU)   ? "GPU"
                       : (i.type & CL_DEVICE_TYPE_CPU) ? "CPU"
                                                       : "other";
    printf("  [%u:%u] %s (%s, %s)\n", pi, di, i.name, type, i.vendor);
    printf("    version:          %s, driver %s\n", i.device_version, i.driver_version);
    printf("    compute units:    %u\n", i.compute_units);
    printf("    max work-group:   %zu\n", i.max_work_group_size);
    printf("    local memory:     %llu KiB\n", (unsigned long long)(i.local_mem_size / 1024));
    printf("    max allocation:   %llu MiB of %llu MiB global\n",
           (unsigned long long)(i.max_mem_alloc_size >> 20), (unsigned long long)(i.global_mem_size >> 20));
    printf("    extensions used:  fp16 %s, fp64 %s, subgroups %s\n", i.has_fp16 ? "yes" : "no",
           i.has_fp64 ? "yes" : "no", i.has_subgroups ? "yes" : "no");
    const char *cache_dir = NULL;
    clattn_context_config(cc, NULL, &cache_dir);
    printf("    disk cache:       %s\n", cache_dir && *cache_dir ? cache_dir : "off");
    char config[1024];
    clattn_context_describe_config(cc, config, sizeof config);
    printf("    settings (where each comes from):\n");
    for (char *line = strtok(config, "\n"); line; line = strtok(NULL, "\n"))
        printf("      %s\n", line);
    printf("    kernels:\n");
    int built = 0;
    for (size_t k = 0; k < clattn_kernel_count(); k++) {
        double t0 = tool_now();
        st = clattn_kernel_build(cc, clattn_kernel_name(k));
        double ms = 1e3 * (tool_now() - t0);
        printf("      %-12s %s (%.0f ms)\n", clattn_kernel_name(k),
               st == CL_SUCCESS ? "builds" : clattn_status_name(st), ms);
        built += st == CL_SUCCESS;
    }
    int works = 0;
    if (built == (int)clattn_kernel_count()) {
        double e = INFINITY, t0 = tool_now();
        st = smoke_test(cc, c, dev, &e);
        works = st == CL_SUCCESS && e <= 1e-4;
        printf("    attention check:  %s (max error %.2g, %.0f ms with first GEMM compile)\n",
               st != CL_SUCCESS ? clattn_status_name(st) : works ? "correct" : "WRONG", e,
               1e3 * (tool_now() - t0));
    }
    printf("    => %s\n", works ? "works" : "does not work");
    clattn_context_destroy(&cc);
    clReleaseContext(c);
    return works;
}

int main(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: clattn-info\n"
               "Lists OpenCL devices, the capabilities clattn uses, whether each clattn kernel\n"
               "builds, and whether a small attention call is correct. Exit status 0 when at\n"
               "least one device works. CLATTN_DEVICE=P:D names the default device.\n");
        return 0;
    }
    printf("clattn %s\n", clattn_version());
    cl_uint np = 0;
    if (clGetPlatformIDs(0, NULL, &np) != CL_SUCCESS || np == 0) {
        printf("no OpenCL platform found (is an ICD such as pocl-opencl-icd installed?)\n");
        return 1;
    }
    cl_platform_id *plats = calloc(np, sizeof *plats);
    clGetPlatformIDs(np, plats, NULL);
    int working = 0;
    for (cl_uint p = 0; p < np; p++) {
        char name[256] = {0}, ver[256] = {0};
        clGetPlatformInfo(plats[p], CL_PLATFORM_NAME, sizeof name - 1, name, NULL);
        clGetPlatformInfo(plats[p], CL_PLATFORM_VERSION, sizeof ver - 1, ver, NULL);
        printf("platform %u: %s (%s)\n", p, name, ver);
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd) != CL_SUCCESS || nd == 0) {
            printf("  no devices\n");
            continue;
        }
        cl_device_id *devs = calloc(nd, sizeof *devs);
        clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, nd, devs, NULL);
        for (cl_uint d = 0; d < nd; d++)
            working += report_device(p, d, devs[d]);
        free(devs);
    }
    free(plats);
    clattn_context *def = NULL;
    clattn_status st = clattn_context_create(NULL, &def);
    if (st == CL_SUCCESS) {
        clattn_device_info i;
        clattn_context_device_info(def, &i);
        printf("default device: %s\n", i.name);
        clattn_context_destroy(&def);
    } else {
        printf("default device: none (%s)\n", clattn_status_name(st));
    }
    printf("%d working device(s)\n", working);
    return working > 0 ? 0 : 1;
}
