/* Compiled-program cache: one cl_program per (kernel file, build options) and context, each with a
 * pool of cl_kernel objects per kernel name. Sources come from the table embedded at build time,
 * or from a kernel directory; the common prelude is joined in front of every file.
 *
 * Builds run outside the context lock: the first call that needs a program marks its entry
 * "building" and compiles; calls that need the same program wait for it, all others go on. A
 * build the device refuses (CL_BUILD_PROGRAM_FAILURE) is remembered, so two identical calls
 * always see the same answer; any other failure (memory, a missing file) is not. */
#include "program.h"

#include "disk_cache.h"
#include "kernel_sources.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

/* Every build gets these; no -cl-fast-relaxed-math: the softmax needs an accurate exp. */
#define BASE_OPTIONS "-cl-std=CL1.2"

typedef struct clattn_kernel_pool {
    char *name;
    cl_uint num_args;      /* CL_KERNEL_NUM_ARGS, read when the first object was created */
    size_t max_wg;         /* CL_KERNEL_WORK_GROUP_SIZE on the context's device; 0: not yet */
    cl_ulong local_mem;    /* CL_KERNEL_LOCAL_MEM_SIZE */
    cl_kernel *free;       /* objects not checked out */
    size_t nfree, cap;
    struct clattn_kernel_pool *next;
} clattn_kernel_pool;

typedef enum entry_state { ENTRY_BUILDING, ENTRY_READY, ENTRY_FAILED } entry_state;

typedef struct program_entry {
    char *file;
    char *options;
    entry_state state;
    cl_program program;       /* ENTRY_READY */
    clattn_kernel_pool *pools;
    struct program_entry *next;
} program_entry;

struct clattn_program_cache {
    program_entry *head;      /* entries are never removed once ready: pointers stay valid */
    pthread_cond_t changed;   /* an entry left ENTRY_BUILDING */
    char *kernel_dir;         /* NULL: embedded sources */
};

size_t clattn_kernel_count(void)
{
    return clattn__kernel_source_count;
}

const char *clattn_kernel_name(size_t index)
{
    return index < clattn__kernel_source_count ? clattn__kernel_sources[index].name : NULL;
}

clattn_status clattn__program_cache_create(const char *kernel_dir, struct clattn_program_cache **out)
{
    struct clattn_program_cache *c = calloc(1, sizeof *c);
    if (!c)
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    if ((kernel_dir && !(c->kernel_dir = strdup(kernel_dir))) ||
        pthread_cond_init(&c->changed, NULL) != 0) {
        free(c->kernel_dir);
        free(c);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    *out = c;
    return CL_SUCCESS;
}

static void entry_free(program_entry *e)
{
    while (e->pools) {
        clattn_kernel_pool *p = e->pools;
        e->pools = p->next;
        for (size_t k = 0; k < p->nfree; k++)
            clReleaseKernel(p->free[k]);
        free(p->free);
        free(p->name);
        free(p);
    }
    if (e->program)
        clReleaseProgram(e->program);
    free(e->file);
    free(e->options);
    free(e);
}

void clattn__program_cache_destroy(struct clattn_program_cache **cache)
{
    if (!cache || !*cache)
        return;
    while ((*cache)->head) {
        program_entry *e = (*cache)->head;
        (*cache)->head = e->next;
        entry_free(e);
    }
    pthread_cond_destroy(&(*cache)->changed);
    free((*cache)->kernel_dir);
    free(*cache);
    *cache = NULL;
}

/* Reads `dir`/`file`.cl whole into a new NUL-terminated buffer. */
static clattn_status read_file(clattn_context *ctx, const char *dir, const char *file, char **out,
                               size_t *len)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s.cl", dir, file) >= (int)sizeof path)
        return CLATTN_ERROR_KERNEL_NOT_FOUND;
    /* A regular file only: a FIFO would block the build forever. */
    const int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat sb;
    FILE *f = fd >= 0 && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) ? fdopen(fd, "rb") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
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
    *out = buf;
    *len = n;
    return CL_SUCCESS;
}

/* One source text from the kernel directory (caller frees *owned) or the embedded table. */
static clattn_status find_source(clattn_context *ctx, const char *file, const char **src,
                                 size_t *len, char **owned)
{
    *owned = NULL;
    const char *dir = ctx->programs->kernel_dir;
    if (dir) {
        clattn_status st = read_file(ctx, dir, file, owned, len);
        *src = *owned;
        return st;
    }
    if (strcmp(file, "prelude") == 0) {
        *src = clattn__kernel_prelude.source;
        *len = clattn__kernel_prelude.length;
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

/* The text a kernel file is built from: the prelude, then the file, whose build-log line numbers
 * stay its own (#line). It is also what the disk cache's key hashes. */
static clattn_status joined_source(clattn_context *ctx, const char *file, char **out, size_t *len)
{
    static const char line_reset[] = "\n#line 1\n";
    const char *pre, *body;
    size_t npre, nbody;
    char *own_pre, *own_body = NULL;
    clattn_status st = find_source(ctx, "prelude", &pre, &npre, &own_pre);
    if (st == CL_SUCCESS)
        st = find_source(ctx, file, &body, &nbody, &own_body);
    if (st == CL_SUCCESS) {
        *len = npre + sizeof line_reset - 1 + nbody;
        if (!(*out = malloc(*len + 1))) {
            st = CLATTN_ERROR_OUT_OF_HOST_MEMORY;
        } else {
            memcpy(*out, pre, npre);
            memcpy(*out + npre, line_reset, sizeof line_reset - 1);
            memcpy(*out + npre + sizeof line_reset - 1, body, nbody);
            (*out)[*len] = '\0';
        }
    }
    free(own_pre);
    free(own_body);
    return st;
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

/* The kernel functions a file of the library's defines (NULL for other files, e.g. a test's own
 * in a kernel directory). */
static const char *kernels_of(const char *file)
{
    for (size_t i = 0; i < clattn__kernel_source_count; i++)
        if (strcmp(clattn__kernel_sources[i].name, file) == 0)
            return clattn__kernel_sources[i].kernels;
    return NULL;
}

/* Compiles (file, options), or loads it from the disk cache. Runs without the context lock. */
static clattn_status build(clattn_context *ctx, const char *file, const char *options,
                           cl_program *out)
{
    char *src;
    size_t len;
    clattn_status st = joined_source(ctx, file, &src, &len);
    if (st != CL_SUCCESS)
        return st;
    size_t olen = strlen(BASE_OPTIONS) + 1 + strlen(options) + 1;
    char *all = malloc(olen);
    if (!all) {
        free(src);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    snprintf(all, olen, "%s %s", BASE_OPTIONS, options);

    /* The disk cache first; on any miss, compile from source and store the binary. */
    cl_int err = CL_SUCCESS;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cl_program prog = clattn__disk_cache_load(ctx, src, len, all, kernels_of(file));
    const bool cached = prog != NULL;
    if (!prog) {
        const char *srcs[1] = {src};
        prog = clCreateProgramWithSource(ctx->context, 1, srcs, &len, &err);
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
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (err == CL_SUCCESS) /* what a cold start costs, program by program (clattn-bench) */
        clattn__log(ctx, CLATTN_LOG_DEBUG, "clattn: program %s [%s] %s in %.1f ms", file, options,
                    cached ? "loaded from the disk cache" : "built",
                    1e3 * (double)(t1.tv_sec - t0.tv_sec) + 1e-6 * (double)(t1.tv_nsec - t0.tv_nsec));
    free(all);
    free(src);
    if (err != CL_SUCCESS)
        return (err == CL_BUILD_PROGRAM_FAILURE || err == CL_INVALID_BUILD_OPTIONS)
                   ? CLATTN_ERROR_BUILD_FAILED
                   : err;
    *out = prog;
    return CL_SUCCESS;
}

/* The ready entry for (file, options), building it if no thread has. */
static clattn_status get_program(clattn_context *ctx, const char *file, const char *options,
                                 program_entry **out)
{
    struct clattn_program_cache *c = ctx->programs;
    pthread_mutex_lock(&ctx->lock);
    for (;;) {
        program_entry *e = c->head;
        while (e && (strcmp(e->file, file) != 0 || strcmp(e->options, options) != 0))
            e = e->next;
        if (!e)
            break;
        if (e->state == ENTRY_BUILDING) {
            pthread_cond_wait(&c->changed, &ctx->lock);
            continue; /* look again: a failed build may have removed it */
        }
        pthread_mutex_unlock(&ctx->lock);
        *out = e;
        return e->state == ENTRY_READY ? CL_SUCCESS : CLATTN_ERROR_BUILD_FAILED;
    }
    program_entry *e = calloc(1, sizeof *e);
    if (e && (!(e->file = strdup(file)) || !(e->options = strdup(options)))) {
        entry_free(e);
        e = NULL;
    }
    if (!e) {
        pthread_mutex_unlock(&ctx->lock);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    e->state = ENTRY_BUILDING;
    e->next = c->head;
    c->head = e;
    pthread_mutex_unlock(&ctx->lock);

    cl_program prog = NULL;
    clattn_status st = build(ctx, file, options, &prog);

    pthread_mutex_lock(&ctx->lock);
    if (st == CL_SUCCESS) {
        e->program = prog;
        e->state = ENTRY_READY;
    } else if (st == CLATTN_ERROR_BUILD_FAILED) {
        e->state = ENTRY_FAILED; /* a fact about this device: remembered */
    } else {
        /* A transient failure: forget the entry, so that the next call tries again. */
        program_entry **p = &c->head;
        while (*p != e)
            p = &(*p)->next;
        *p = e->next;
        entry_free(e);
        e = NULL;
    }
    pthread_cond_broadcast(&c->changed);
    pthread_mutex_unlock(&ctx->lock);
    *out = e;
    return st;
}

clattn_status clattn__program_build(clattn_context *ctx, const char *file, const char *options)
{
    program_entry *e;
    return get_program(ctx, file, options, &e);
}

/* What a launch checks a kernel object against. */
typedef struct kernel_limits {
    cl_uint num_args;   /* CL_KERNEL_NUM_ARGS */
    size_t max_wg;      /* CL_KERNEL_WORK_GROUP_SIZE on the context's device */
    cl_ulong local_mem; /* CL_KERNEL_LOCAL_MEM_SIZE: what its __local arrays take */
} kernel_limits;

/* Takes a kernel object `name` of a ready program out of its pool, creating one when the pool
 * is empty. */
static clattn_status checkout(clattn_context *ctx, program_entry *e, const char *name,
                              clattn_kernel_pool **pool_out, cl_kernel *out, kernel_limits *lim)
{
    pthread_mutex_lock(&ctx->lock);
    clattn_kernel_pool *p = e->pools;
    while (p && strcmp(p->name, name) != 0)
        p = p->next;
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p || !(p->name = strdup(name))) {
            free(p);
            pthread_mutex_unlock(&ctx->lock);
            return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
        }
        p->next = e->pools;
        e->pools = p;
    }
    *pool_out = p;
    lim->num_args = p->num_args;
    lim->max_wg = p->max_wg;
    lim->local_mem = p->local_mem;
    if (p->nfree > 0) {
        *out = p->free[--p->nfree];
        pthread_mutex_unlock(&ctx->lock);
        return CL_SUCCESS;
    }
    const bool first = p->max_wg == 0; /* no object made yet: learn the limits */
    pthread_mutex_unlock(&ctx->lock);

    cl_int err;
    cl_kernel k = clCreateKernel(e->program, name, &err);
    if (err != CL_SUCCESS)
        return err == CL_INVALID_KERNEL_NAME ? CLATTN_ERROR_KERNEL_NOT_FOUND : err;
    if (first) {
        cl_uint nargs = 0;
        size_t wg = 0;
        cl_ulong local = 0;
        err = clGetKernelInfo(k, CL_KERNEL_NUM_ARGS, sizeof nargs, &nargs, NULL);
        if (err == CL_SUCCESS)
            err = clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof wg,
                                           &wg, NULL);
        if (err == CL_SUCCESS)
            err = clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_LOCAL_MEM_SIZE,
                                           sizeof local, &local, NULL);
        if (err != CL_SUCCESS) {
            clReleaseKernel(k);
            return err;
        }
        pthread_mutex_lock(&ctx->lock);
        p->num_args = lim->num_args = nargs;
        p->max_wg = lim->max_wg = wg;
        p->local_mem = lim->local_mem = local;
        pthread_mutex_unlock(&ctx->lock);
    }
    *out = k;
    return CL_SUCCESS;
}

static void checkin(clattn_context *ctx, clattn_kernel_pool *p, cl_kernel k)
{
    pthread_mutex_lock(&ctx->lock);
    if (p->nfree == p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 4;
        cl_kernel *nf = realloc(p->free, ncap * sizeof *nf);
        if (!nf) { /* cannot keep it: let it go, the pool makes another when needed */
            pthread_mutex_unlock(&ctx->lock);
            clReleaseKernel(k);
            return;
        }
        p->free = nf;
        p->cap = ncap;
    }
    p->free[p->nfree++] = k;
    pthread_mutex_unlock(&ctx->lock);
}

static void push(clattn_kargs *a, size_t size, const void *value)
{
    if (a->count == CLATTN_MAX_KERNEL_ARGS) {
        a->overflow = true;
        return;
    }
    a->arg[a->count].size = size;
    memcpy(&a->arg[a->count].v, value, size);
    a->count++;
}

void clattn__arg_mem(clattn_kargs *a, cl_mem m)
{
    push(a, sizeof m, &m);
}

void clattn__arg_ulong(clattn_kargs *a, cl_ulong x)
{
    push(a, sizeof x, &x);
}

void clattn__arg_long(clattn_kargs *a, cl_long x)
{
    push(a, sizeof x, &x);
}

void clattn__arg_int(clattn_kargs *a, cl_int x)
{
    push(a, sizeof x, &x);
}

void clattn__arg_uint(clattn_kargs *a, cl_uint x)
{
    push(a, sizeof x, &x);
}

void clattn__arg_float(clattn_kargs *a, cl_float x)
{
    push(a, sizeof x, &x);
}

void clattn__arg_view(clattn_kargs *a, const clattn_tensor *t)
{
    static const clattn_tensor none = {0};
    if (!t)
        t = &none;
    cl_ulong4 st;
    for (int d = 0; d < 4; d++)
        st.s[d] = t->dims[d] == 1 ? 0 : t->strides[d]; /* as clattn__stride */
    clattn__arg_mem(a, t->buffer);
    clattn__arg_ulong(a, t->offset);
    push(a, sizeof st, &st);
}

clattn_status clattn__launch_prepare(clattn_context *ctx, const char *file, const char *options,
                                     const char *kernel, const clattn_kargs *args, cl_uint dims,
                                     const size_t *global, const size_t *local, clattn_launch *out)
{
    memset(out, 0, sizeof *out);
    program_entry *e;
    clattn_status st = get_program(ctx, file, options, &e);
    cl_kernel k = NULL;
    clattn_kernel_pool *pool = NULL;
    kernel_limits lim;
    if (st == CL_SUCCESS)
        st = checkout(ctx, e, kernel, &pool, &k, &lim);
    if (st != CL_SUCCESS)
        return st;
    if (args->overflow || args->count != lim.num_args) {
        clattn__log(ctx, CLATTN_LOG_ERROR,
                    "clattn: kernel %s in %s.cl takes %u arguments, the host passes %u%s", kernel,
                    file, lim.num_args, args->count, args->overflow ? " (too many)" : "");
        st = CLATTN_ERROR_INTERNAL;
    }
    size_t wg = 1;
    for (cl_uint d = 0; local && d < dims; d++)
        wg *= local[d];
    for (cl_uint d = 0; d < dims; d++)
        if (global[d] == 0 || (local && global[d] % local[d] != 0))
            st = CLATTN_ERROR_INTERNAL; /* the op should have planned no launch, or a whole one */
    /* A specialisation the device cannot launch (too wide a work-group, more local memory than
     * it has) is refused here, not at enqueue. */
    if (st == CL_SUCCESS && (wg > lim.max_wg || lim.local_mem > ctx->info.local_mem_size))
        st = CLATTN_ERROR_UNSUPPORTED_DEVICE;
    for (cl_uint i = 0; st == CL_SUCCESS && i < args->count; i++)
        st = clSetKernelArg(k, i, args->arg[i].size, &args->arg[i].v);
    if (st != CL_SUCCESS) {
        checkin(ctx, pool, k);
        return st;
    }
    out->pool = pool;
    out->kernel = k;
    out->dims = dims;
    for (cl_uint d = 0; d < dims; d++) {
        out->global[d] = global[d];
        out->local[d] = local ? local[d] : 0;
    }
    out->has_local = local != NULL;
    return CL_SUCCESS;
}

clattn_status clattn__launch_enqueue(cl_command_queue queue, const clattn_launch *l,
                                     cl_uint num_wait, const cl_event *wait_list,
                                     cl_event *event_out)
{
    return clEnqueueNDRangeKernel(queue, l->kernel, l->dims, NULL, l->global,
                                  l->has_local ? l->local : NULL, num_wait, wait_list, event_out);
}

void clattn__launch_release(clattn_context *ctx, clattn_launch *l)
{
    if (l->kernel)
        checkin(ctx, l->pool, l->kernel);
    l->kernel = NULL;
    l->pool = NULL;
}

clattn_status clattn_kernel_build(clattn_context *ctx, const char *name)
{
    if (!ctx || !name)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    return clattn__program_build(ctx, name, "");
}
