/* Device selection, capabilities, and the lifetime of a clattn_context. */
#include "context.h"
#include "disk_cache.h"

#include "gemm.h"
#include "program.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

clattn_context_params clattn_context_params_default(void)
{
    clattn_context_params p;
    memset(&p, 0, sizeof p);
    p.log_level = CLATTN_LOG_WARN;
    return p;
}

void clattn__log(const clattn_context *ctx, clattn_log_level level, const char *fmt, ...)
{
    if (!ctx || !ctx->log || level > ctx->log_level)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ctx->log(ctx->log_user, level, buf);
}

static void copy_info_string(cl_device_id dev, cl_device_info what, char *dst, size_t cap)
{
    dst[0] = '\0';
    if (clGetDeviceInfo(dev, what, cap, dst, NULL) != CL_SUCCESS) {
        /* Longer than the field: fetch whole, then truncate. */
        size_t len = 0;
        if (clGetDeviceInfo(dev, what, 0, NULL, &len) == CL_SUCCESS && len > 0) {
            char *tmp = malloc(len);
            if (tmp && clGetDeviceInfo(dev, what, len, tmp, NULL) == CL_SUCCESS) {
                snprintf(dst, cap, "%s", tmp);
            }
            free(tmp);
        }
    }
    dst[cap - 1] = '\0';
}

static int has_extension(cl_device_id dev, const char *ext)
{
    size_t len = 0;
    if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, 0, NULL, &len) != CL_SUCCESS || len == 0)
        return 0;
    char *all = malloc(len + 1);
    if (!all)
        return 0;
    int found = 0;
    if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, len, all, NULL) == CL_SUCCESS) {
        all[len] = '\0';
        size_t n = strlen(ext);
        for (const char *p = strstr(all, ext); p; p = strstr(p + 1, ext)) {
            if ((p == all || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) {
                found = 1;
                break;
            }
        }
    }
    free(all);
    return found;
}

static clattn_status query_info(clattn_context *ctx)
{
    cl_device_id dev = ctx->device;
    clattn_device_info *i = &ctx->info;
    memset(i, 0, sizeof *i);
    cl_int err = clGetDeviceInfo(dev, CL_DEVICE_PLATFORM, sizeof ctx->platform, &ctx->platform, NULL);
    if (err != CL_SUCCESS)
        return err;
    copy_info_string(dev, CL_DEVICE_NAME, i->name, sizeof i->name);
    copy_info_string(dev, CL_DEVICE_VENDOR, i->vendor, sizeof i->vendor);
    copy_info_string(dev, CL_DEVICE_VERSION, i->device_version, sizeof i->device_version);
    copy_info_string(dev, CL_DRIVER_VERSION, i->driver_version, sizeof i->driver_version);
    clGetPlatformInfo(ctx->platform, CL_PLATFORM_NAME, sizeof i->platform_name, i->platform_name, NULL);
    clGetPlatformInfo(ctx->platform, CL_PLATFORM_VERSION, sizeof i->platform_version,
                      i->platform_version, NULL);
    i->platform_name[sizeof i->platform_name - 1] = '\0';
    i->platform_version[sizeof i->platform_version - 1] = '\0';

    struct { cl_device_info what; void *dst; size_t size; } q[] = {
        {CL_DEVICE_TYPE, &i->type, sizeof i->type},
        {CL_DEVICE_MAX_COMPUTE_UNITS, &i->compute_units, sizeof i->compute_units},
        {CL_DEVICE_MAX_WORK_GROUP_SIZE, &i->max_work_group_size, sizeof i->max_work_group_size},
        {CL_DEVICE_LOCAL_MEM_SIZE, &i->local_mem_size, sizeof i->local_mem_size},
        {CL_DEVICE_MAX_MEM_ALLOC_SIZE, &i->max_mem_alloc_size, sizeof i->max_mem_alloc_size},
        {CL_DEVICE_GLOBAL_MEM_SIZE, &i->global_mem_size, sizeof i->global_mem_size},
        {CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT, &ctx->native_float_width, sizeof ctx->native_float_width},
    };
    for (size_t k = 0; k < sizeof q / sizeof q[0]; k++) {
        err = clGetDeviceInfo(dev, q[k].what, q[k].size, q[k].dst, NULL);
        if (err != CL_SUCCESS)
            return err;
    }
    i->has_fp16 = has_extension(dev, "cl_khr_fp16");
    i->has_fp64 = has_extension(dev, "cl_khr_fp64");
    i->has_subgroups = has_extension(dev, "cl_khr_subgroups") || has_extension(dev, "cl_intel_subgroups");
    return CL_SUCCESS;
}

/* Case-insensitive substring test. */
static int contains_nocase(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t k = 0;
        while (k < n && hay[k] && tolower((unsigned char)hay[k]) == tolower((unsigned char)needle[k]))
            k++;
        if (k == n)
            return 1;
    }
    return n == 0;
}

/* Picks a device per CLATTN_DEVICE, else the first GPU, else the first CPU, else the first one. */
static clattn_status pick_device(cl_device_id *out)
{
    cl_uint np = 0;
    cl_int err = clGetPlatformIDs(0, NULL, &np);
    if (err == -1001 /* CL_PLATFORM_NOT_FOUND_KHR, from the ICD loader */ || np == 0)
        return CLATTN_ERROR_NO_DEVICE;
    if (err != CL_SUCCESS)
        return err;
    cl_platform_id plats[64];
    if (np > 64)
        np = 64;
    if ((err = clGetPlatformIDs(np, plats, NULL)) != CL_SUCCESS)
        return err;

    const char *want = getenv("CLATTN_DEVICE");
    if (want && !*want)
        want = NULL;
    unsigned wp = 0, wd = 0;
    char tail = 0;
    int by_index = want && sscanf(want, "%u:%u%c", &wp, &wd, &tail) == 2;

    cl_device_id first_gpu = NULL, first_cpu = NULL, first_any = NULL;
    for (cl_uint p = 0; p < np; p++) {
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd) != CL_SUCCESS || nd == 0)
            continue;
        cl_device_id devs[64];
        if (nd > 64)
            nd = 64;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, nd, devs, NULL) != CL_SUCCESS)
            continue;
        for (cl_uint d = 0; d < nd; d++) {
            if (want) {
                if (by_index) {
                    if (p == wp && d == wd) {
                        *out = devs[d];
                        return CL_SUCCESS;
                    }
                } else {
                    char name[256] = {0};
                    clGetDeviceInfo(devs[d], CL_DEVICE_NAME, sizeof name - 1, name, NULL);
                    if (contains_nocase(name, want)) {
                        *out = devs[d];
                        return CL_SUCCESS;
                    }
                }
                continue;
            }
            cl_device_type t = 0;
            clGetDeviceInfo(devs[d], CL_DEVICE_TYPE, sizeof t, &t, NULL);
            if (!first_gpu && (t & CL_DEVICE_TYPE_GPU))
                first_gpu = devs[d];
            if (!first_cpu && (t & CL_DEVICE_TYPE_CPU))
                first_cpu = devs[d];
            if (!first_any)
                first_any = devs[d];
        }
    }
    if (want)
        return CLATTN_ERROR_DEVICE_NOT_FOUND;
    *out = first_gpu ? first_gpu : first_cpu ? first_cpu : first_any;
    return *out ? CL_SUCCESS : CLATTN_ERROR_NO_DEVICE;
}

/* The disk cache directory: the params' own, else $CLATTN_CACHE_DIR ("off": none), else
 * $XDG_CACHE_HOME/clattn, else ~/.cache/clattn; "" when off or when no directory is known. */
static clattn_status resolve_cache_dir(const clattn_context_params *p, char *out, size_t cap)
{
    out[0] = '\0';
    if (p->disk_cache_off)
        return CL_SUCCESS;
    const char *dir = p->cache_dir;
    int n = 0;
    if (dir) {
        if (!*dir || strlen(dir) >= cap)
            return CLATTN_ERROR_INVALID_ARGUMENT;
        n = snprintf(out, cap, "%s", dir);
    } else if ((dir = getenv("CLATTN_CACHE_DIR")) && *dir) {
        if (strcmp(dir, "off") != 0)
            n = snprintf(out, cap, "%s", dir);
    } else if ((dir = getenv("XDG_CACHE_HOME")) && *dir) {
        n = snprintf(out, cap, "%s/clattn", dir);
    } else if ((dir = getenv("HOME")) && *dir) {
        n = snprintf(out, cap, "%s/.cache/clattn", dir);
    }
    if (n < 0 || (size_t)n >= cap)
        out[0] = '\0'; /* an environment path too long to use: no cache */
    return CL_SUCCESS;
}

clattn_status clattn_context_create(const clattn_context_params *params, clattn_context **out)
{
    if (!out)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    clattn_context_params p = params ? *params : clattn_context_params_default();
    if (!CLATTN_RESERVED_ZERO(&p))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (!p.context && p.device)
        return CLATTN_ERROR_INVALID_ARGUMENT; /* a device without its context */
    if (p.log_level < CLATTN_LOG_ERROR || p.log_level > CLATTN_LOG_DEBUG)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_kernel_config kernels;
    unsigned char origin[CONFIG_COUNT];
    char cache_dir[sizeof ((clattn_context *)0)->cache_dir];
    clattn_status st = clattn__config_resolve(&p.kernels, &kernels, origin);
    if (st == CL_SUCCESS)
        st = resolve_cache_dir(&p, cache_dir, sizeof cache_dir);
    if (st != CL_SUCCESS)
        return st;

    cl_int err = CL_SUCCESS;
    cl_device_id device = p.device;
    cl_context context = p.context;
    if (context) {
        cl_uint nd = 0;
        if ((err = clGetContextInfo(context, CL_CONTEXT_NUM_DEVICES, sizeof nd, &nd, NULL)) != CL_SUCCESS)
            return err;
        if (!device) {
            if (nd != 1)
                return CLATTN_ERROR_INVALID_ARGUMENT;
            if ((err = clGetContextInfo(context, CL_CONTEXT_DEVICES, sizeof device, &device, NULL)) != CL_SUCCESS)
                return err;
        } else {
            cl_device_id devs[64];
            if (nd > 64 || (err = clGetContextInfo(context, CL_CONTEXT_DEVICES, nd * sizeof devs[0], devs, NULL)) != CL_SUCCESS)
                return err != CL_SUCCESS ? err : CLATTN_ERROR_INVALID_ARGUMENT;
            int found = 0;
            for (cl_uint i = 0; i < nd; i++)
                found |= devs[i] == device;
            if (!found)
                return CLATTN_ERROR_CONTEXT_MISMATCH;
        }
        if ((err = clRetainContext(context)) != CL_SUCCESS)
            return err;
    } else {
        if ((st = pick_device(&device)) != CL_SUCCESS)
            return st;
        context = clCreateContext(NULL, 1, &device, NULL, NULL, &err);
        if (err != CL_SUCCESS)
            return err;
    }
    if ((err = clRetainDevice(device)) != CL_SUCCESS) {
        clReleaseContext(context);
        return err;
    }

    clattn_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        clReleaseDevice(device);
        clReleaseContext(context);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    ctx->context = context;
    ctx->device = device;
    ctx->log = p.log;
    ctx->log_user = p.log_user;
    ctx->log_level = p.log_level;
    ctx->kernels = kernels;
    memcpy(ctx->kernels_origin, origin, sizeof origin);
    memcpy(ctx->cache_dir, cache_dir, sizeof cache_dir);
    if (pthread_mutex_init(&ctx->lock, NULL) != 0) {
        clReleaseDevice(device);
        clReleaseContext(context);
        free(ctx);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    if (pthread_mutex_init(&ctx->own_lock, NULL) != 0) {
        pthread_mutex_destroy(&ctx->lock);
        clReleaseDevice(device);
        clReleaseContext(context);
        free(ctx);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    /* A cache directory others could write is not used: they could plant binaries in it. */
    char why[64];
    if (ctx->cache_dir[0] && !clattn__cache_dir_trusted(ctx->cache_dir, why, sizeof why)) {
        clattn__log(ctx, CLATTN_LOG_WARN, "clattn: disk cache off: %s %s", ctx->cache_dir, why);
        ctx->cache_dir[0] = '\0';
    }
    if (ctx->cache_dir[0])
        clattn__cache_sweep(ctx->cache_dir);
    /* Kernel sources from a directory instead of the library (development); read once. */
    const char *kernel_dir = getenv("CLATTN_KERNEL_DIR");
    st = query_info(ctx);
    if (st == CL_SUCCESS)
        st = clattn__program_cache_create(kernel_dir && *kernel_dir ? kernel_dir : NULL,
                                          &ctx->programs);
    if (st == CL_SUCCESS) /* what params and environment leave unset, from clattn-tune's file */
        clattn__config_from_tune_file(ctx, p.clblast_tuning != 0);
    if (st != CL_SUCCESS) {
        clattn_context_destroy(&ctx);
        return st;
    }
    *out = ctx;
    return CL_SUCCESS;
}

void clattn_context_destroy(clattn_context **pctx)
{
    if (!pctx || !*pctx)
        return;
    clattn_context *ctx = *pctx;
    clattn__gemm_forget_context(ctx);
    clattn__program_cache_destroy(&ctx->programs);
    if (ctx->own_queue)
        clReleaseCommandQueue(ctx->own_queue);
    pthread_mutex_destroy(&ctx->own_lock);
    pthread_mutex_destroy(&ctx->lock);
    clReleaseDevice(ctx->device);
    clReleaseContext(ctx->context);
    free(ctx);
    *pctx = NULL;
}

clattn_status clattn_context_finish(clattn_context *ctx)
{
    return ctx ? clattn__gemm_finish(ctx) : CLATTN_ERROR_INVALID_ARGUMENT;
}

cl_context clattn_context_cl_context(const clattn_context *ctx)
{
    return ctx ? ctx->context : NULL;
}

cl_device_id clattn_context_cl_device(const clattn_context *ctx)
{
    return ctx ? ctx->device : NULL;
}

clattn_status clattn_context_device_info(const clattn_context *ctx, clattn_device_info *out)
{
    if (!ctx || !out)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    *out = ctx->info;
    return CL_SUCCESS;
}

clattn_status clattn_context_config(const clattn_context *ctx, clattn_kernel_config *kernels,
                                    const char **cache_dir)
{
    if (!ctx)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (kernels)
        *kernels = ctx->kernels;
    if (cache_dir)
        *cache_dir = ctx->cache_dir;
    return CL_SUCCESS;
}

clattn_status clattn__own_queue_begin(clattn_context *ctx, cl_command_queue *queue)
{
    pthread_mutex_lock(&ctx->own_lock);
    cl_int err = CL_SUCCESS;
    if (!ctx->own_queue)
        ctx->own_queue = clCreateCommandQueue(ctx->context, ctx->device, 0, &err);
    if (err != CL_SUCCESS) {
        pthread_mutex_unlock(&ctx->own_lock);
        return err;
    }
    *queue = ctx->own_queue;
    return CL_SUCCESS;
}

void clattn__own_queue_end(clattn_context *ctx)
{
    pthread_mutex_unlock(&ctx->own_lock);
}

clattn_status clattn__check_queue(const clattn_context *ctx, cl_command_queue queue)
{
    if (!queue)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    cl_context qc = NULL;
    cl_device_id qd = NULL;
    cl_int err = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof qc, &qc, NULL);
    if (err == CL_SUCCESS)
        err = clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof qd, &qd, NULL);
    if (err != CL_SUCCESS)
        return err;
    return (qc == ctx->context && qd == ctx->device) ? CL_SUCCESS : CLATTN_ERROR_CONTEXT_MISMATCH;
}

clattn_status clattn__check_wait_list(cl_uint num_wait, const cl_event *wait_list)
{
    if ((num_wait > 0) != (wait_list != NULL))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    for (cl_uint i = 0; i < num_wait; i++)
        if (!wait_list[i])
            return CLATTN_ERROR_INVALID_ARGUMENT;
    return CL_SUCCESS; /* the events' states: clattn__plan_enqueue, just before it enqueues */
}

clattn_status clattn__check_call(const clattn_context *ctx, cl_command_queue queue,
                                 cl_uint num_wait, const cl_event *wait_list)
{
    if (!ctx)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_status st = clattn__check_queue(ctx, queue);
    return st != CL_SUCCESS ? st : clattn__check_wait_list(num_wait, wait_list);
}
