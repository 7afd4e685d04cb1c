/* The clattn_context object, shared by every host module. */
#ifndef CLATTN_CONTEXT_H
#define CLATTN_CONTEXT_H
#include "clattn.h"
#include "config.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>

struct clattn_program_cache; /* program.c */

struct clattn_context {
    cl_context context;  /* retained */
    cl_device_id device; /* retained */
    cl_platform_id platform;
    clattn_device_info info;
    cl_uint native_float_width; /* CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT: 16 on AVX-512 CPUs */

    clattn_log_fn log;
    void *log_user;
    clattn_log_level log_level;

    /* Resolved once at create (params, environment, tune file; config.c): the kernel overrides
     * (zero members follow the device table) and where each came from; whether CLBlast runs on
     * the tune file's parameters; the disk cache directory ("" when off). */
    clattn_kernel_config kernels;
    unsigned char kernels_origin[CONFIG_COUNT];
    bool clblast_tuned;
    char cache_dir[4096];

    /* Set once CLBlast has compiled programs for this context, and once each routine clattn
     * uses (single and strided-batched SGEMM) has run in it; the warm-up's buffer (gemm.c). */
    atomic_int blas_used;
    atomic_int blas_warm[2];
    cl_mem blas_scratch;
    /* The queues CLBlast's products run on (gemm.c); created on first use, under `lock`. */
    struct clattn_blas_lanes *blas_lanes;

    /* The library's own in-order queue, for work outside any caller's call (see
     * clattn__own_queue_begin); created on first use, guarded by own_lock. */
    pthread_mutex_t own_lock;
    cl_command_queue own_queue;

    /* Guards the program cache's lists and kernel pools; never held while compiling or while a
     * call sets kernel arguments or enqueues. */
    pthread_mutex_t lock;
    struct clattn_program_cache *programs;
};

/* Whether every reserved member of a params struct is zero (they must be, for later versions to
 * give them meaning). */
static inline int clattn__reserved_zero(const void *r, size_t bytes)
{
    const unsigned char *b = (const unsigned char *)r;
    for (size_t i = 0; i < bytes; i++)
        if (b[i])
            return 0;
    return 1;
}
#define CLATTN_RESERVED_ZERO(params) clattn__reserved_zero((params)->reserved, sizeof (params)->reserved)

/* Sends a printf-style message to the context's log callback, if any and if `level` passes. */
void clattn__log(const clattn_context *ctx, clattn_log_level level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* The context's own queue, for work the library does for itself outside any caller's call
 * (CLBlast's warm-up, copying a layer's weights at create): created on first use and returned
 * with the context's own_lock held, so that one such job runs at a time and waits on nobody
 * else's commands. clattn__own_queue_end releases the lock. */
clattn_status clattn__own_queue_begin(clattn_context *ctx, cl_command_queue *queue);
void clattn__own_queue_end(clattn_context *ctx);

/* The checks every enqueueing call starts with: a context, a queue of its context and device, and
 * a well-formed wait list. */
clattn_status clattn__check_call(const clattn_context *ctx, cl_command_queue queue,
                                 cl_uint num_wait, const cl_event *wait_list);
/* CL_SUCCESS when `queue` belongs to the context's cl_context and device. */
clattn_status clattn__check_queue(const clattn_context *ctx, cl_command_queue queue);
/* Checks the (num_wait, wait_list) pair of an enqueueing call. */
clattn_status clattn__check_wait_list(cl_uint num_wait, const cl_event *wait_list);

#endif
