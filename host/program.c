/* Compiled-program cache: one cl_program per (kernel file, build options) and context, with its
 * cl_kernels. Sources come from the table embedded at build time, or from $CLATTN_KERNEL_DIR. */
#include "program.h"

#include "disk_cache.h"
#include "kernel_sources.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every build gets these; no -cl-fast-relaxed-math: the softmax needs an accurate exp. */
#define BASE_OPTIONS "-cl-std=CL1.2"

typedef struct kernel_entry {
    char *name;
    cl_kernel kernel;
} kernel_entry;

typedef struct program_entry {
    char *file;
    char *options;
    cl_program program;
    kernel_entry *kernels;
    size_t num_kernels;
} program_entry;

struct clattn_program_cache {
    program_entry *entries;
    size_t count, cap;
};

size_t clattn_kernel_count(void)
{
    return clattn__kernel_source_count;
}

const char *clattn_kernel_name(size_t index)
{
    return index < clattn__kernel_source_count ? clattn__kernel_sources[index].name : NULL;
}

clattn_status clattn__program_cache_create(struct clattn_program_cache **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? CL_SUCCESS : CLATTN_ERROR_OUT_OF_HOST_MEMORY;
}

static void entry_free(program_entry *e)
{
    for (size_t k = 0; k < e->num_kernels; k++) {
        clReleaseKernel(e->kernels[k].kernel);
        free(e->kernels[k].name);
    }
    free(e->kernels);
    if (e->program)
        clReleaseProgram(e->program);
    free(e->file);
    free(e->options);
}

void clattn__program_cache_destroy(struct clattn_program_cache **cache)
{
    if (!cache || !*cache)
        return;
    for (size_t i = 0; i < (*cache)->count; i++)
        entry_free(&(*cache)->entries[i]);
    free((*cache)->entries);
    free(*cache);
    *cache = NULL;
}

/* The source of a kernel file: from $CLATTN_KERNEL_DIR when set (caller frees *owned), else the
 * embedded copy. */
static clattn_status load_source(clattn_context *ctx, const char *file, const char **src,
                                 size_t *len, char **owned)
{
    *owned = NULL;
    const char *dir = getenv("CLATTN_KERNEL_DIR");
    if (dir && *dir) {
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s.cl", dir, file) >= (int)sizeof path)
            return CLATTN_ERROR_KERNEL_NOT_FOUND;
        FILE *f = fopen(path, "rb");
        if (!f) {
            clattn__log(ctx, CLATTN_LOG_ERROR, "clattn: cannot open kernel file %s", path);
            return CLATTN_ERROR_KERNEL_NOT_FOUND;
        }
        char *buf = NULL;
        size_t n = 0, cap = 0;
        for (;;) {
            if (cap - n < 4096) {
                char *nb = realloc(buf, cap = cap ? cap * 2 : 16384);
                if (!nb) {
                    free(buf);
                    fclose(f);
                    return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
                }
                buf = nb;
            }
            size_t got = fread(buf + n, 1, cap - n - 1, f);
            n += got;
            if (got == 0)
                break;
        }
        int bad = ferror(f);
        fclose(f);
        if (bad) {
            free(buf);
            return CLATTN_ERROR_KERNEL_NOT_FOUND;
        }
        buf[n] = '\0';
        *owned = buf;
        *src = buf;
        *len = n;
        return CL_SUCCESS;
    }
    for (size_t i = 0; i < clattn__kernel_source_count; i++) {
        if (strcmp(clattn__kernel_sources[i].name, file) == 0) {
            *src = clattn__kernel_sources[i].source;
            *len = clattn__kernel_sources[i].length;
            return CL_SUCCESS;
        }
    }
    return CLATTN_ERROR_KERNEL_NOT_FOUND;
}

static void log_build_failure(clattn_context *ctx, cl_program prog, const char *file,
                              const char *options, cl_int err)
{
    if (!ctx->log || ctx->log_level < CLATTN_LOG_ERROR)
        return;
    size_t len = 0;
    clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &len);
    const char *head = "clattn: building kernel file ";
    size_t cap = strlen(head) + strlen(file) + strlen(options) + len + 64;
    char *msg = malloc(cap);
    if (!msg)
        return;
    int n = snprintf(msg, cap, "%s%s.cl with \"%s\" failed (%d):\n", head, file, options, err);
    if (len > 0)
        clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, len, msg + n, NULL);
    msg[cap - 1] = '\0';
    ctx->log(ctx->log_user, CLATTN_LOG_ERROR, msg);
    free(msg);
}

/* Finds or builds (file, options). Call with ctx->lock held. */
static clattn_status get_program(clattn_context *ctx, const char *file, const char *options,
                                 program_entry **out)
{
    struct clattn_program_cache *c = ctx->programs;
    for (size_t i = 0; i < c->count; i++) {
        if (strcmp(c->entries[i].file, file) == 0 && strcmp(c->entries[i].options, options) == 0) {
            *out = &c->entries[i];
            return CL_SUCCESS;
        }
    }
    if (c->count == c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 16;
        program_entry *ne = realloc(c->entries, ncap * sizeof *ne);
        if (!ne)
            return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
        c->entries = ne;
        c->cap = ncap;
    }

    const char *src;
    size_t len;
    char *owned;
    clattn_status st = load_source(ctx, file, &src, &len, &owned);
    if (st != CL_SUCCESS)
        return st;
    size_t olen = strlen(BASE_OPTIONS) + 1 + strlen(options) + 1;
    char *all = malloc(olen);
    if (!all) {
        free(owned);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    snprintf(all, olen, "%s %s", BASE_OPTIONS, options);

    /* The disk cache first; on any miss, compile from source and store the binary. */
    cl_int err = CL_SUCCESS;
    cl_program prog = clattn__disk_cache_load(ctx, src, len, all);
    if (!prog) {
        prog = clCreateProgramWithSource(ctx->context, 1, &src, &len, &err);
        if (err == CL_SUCCESS) {
            err = clBuildProgram(prog, 1, &ctx->device, all, NULL, NULL);
            if (err != CL_SUCCESS) {
                log_build_failure(ctx, prog, file, options, err);
                clReleaseProgram(prog);
                prog = NULL;
            } else {
                clattn__disk_cache_store(ctx, prog, src, len, all);
            }
        }
    }
    free(all);
    free(owned);
    if (err != CL_SUCCESS)
        return (err == CL_BUILD_PROGRAM_FAILURE || err == CL_INVALID_BUILD_OPTIONS)
                   ? CLATTN_ERROR_BUILD_FAILED
                   : err;

    program_entry e = {strdup(file), strdup(options), prog, NULL, 0};
    if (!e.file || !e.options) {
        entry_free(&e);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    c->entries[c->count] = e;
    *out = &c->entries[c->count++];
    return CL_SUCCESS;
}

/* Finds or creates the cl_kernel `name` of a program entry. Call with ctx->lock held. */
static clattn_status get_kernel(program_entry *e, const char *name, cl_kernel *out)
{
    for (size_t k = 0; k < e->num_kernels; k++) {
        if (strcmp(e->kernels[k].name, name) == 0) {
            *out = e->kernels[k].kernel;
            return CL_SUCCESS;
        }
    }
    kernel_entry *nk = realloc(e->kernels, (e->num_kernels + 1) * sizeof *nk);
    if (!nk)
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    e->kernels = nk;
    cl_int err;
    cl_kernel kern = clCreateKernel(e->program, name, &err);
    if (err != CL_SUCCESS)
        return err == CL_INVALID_KERNEL_NAME ? CLATTN_ERROR_KERNEL_NOT_FOUND : err;
    char *dup = strdup(name);
    if (!dup) {
        clReleaseKernel(kern);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    nk[e->num_kernels].name = dup;
    nk[e->num_kernels].kernel = kern;
    e->num_kernels++;
    *out = kern;
    return CL_SUCCESS;
}

clattn_status clattn__program_prepare(clattn_context *ctx, const char *file, const char *options)
{
    pthread_mutex_lock(&ctx->lock);
    program_entry *e;
    clattn_status st = get_program(ctx, file, options, &e);
    pthread_mutex_unlock(&ctx->lock);
    return st;
}

clattn_status clattn__kernel_work_group_size(clattn_context *ctx, const char *file,
                                             const char *kernel, const char *options, size_t *out)
{
    pthread_mutex_lock(&ctx->lock);
    program_entry *e;
    cl_kernel k;
    clattn_status st = get_program(ctx, file, options, &e);
    if (st == CL_SUCCESS)
        st = get_kernel(e, kernel, &k);
    if (st == CL_SUCCESS)
        st = clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof *out, out, NULL);
    pthread_mutex_unlock(&ctx->lock);
    return st;
}

clattn_status clattn__launch(clattn_context *ctx, cl_command_queue queue, const char *file,
                             const char *kernel, const char *options, cl_uint work_dim,
                             const size_t *global, const size_t *local, const clattn_karg *args,
                             cl_uint num_args, cl_uint num_wait, const cl_event *wait_list,
                             cl_event *event_out)
{
    pthread_mutex_lock(&ctx->lock);
    program_entry *e;
    cl_kernel k = NULL;
    clattn_status st = get_program(ctx, file, options, &e);
    if (st == CL_SUCCESS)
        st = get_kernel(e, kernel, &k);
    for (cl_uint i = 0; st == CL_SUCCESS && i < num_args; i++)
        st = clSetKernelArg(k, i, args[i].size, args[i].value);
    if (st == CL_SUCCESS)
        st = clEnqueueNDRangeKernel(queue, k, work_dim, NULL, global, local, num_wait, wait_list,
                                    event_out);
    pthread_mutex_unlock(&ctx->lock);
    return st;
}

clattn_status clattn_kernel_build(clattn_context *ctx, const char *name)
{
    if (!ctx || !name)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    return clattn__program_prepare(ctx, name, "");
}

clattn_status clattn_context_prepare(clattn_context *ctx)
{
    if (!ctx)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    for (size_t i = 0; i < clattn__kernel_source_count; i++) {
        clattn_status st = clattn_kernel_build(ctx, clattn__kernel_sources[i].name);
        if (st != CL_SUCCESS)
            return st;
    }
    return CL_SUCCESS;
}
