/* Kernel source -> cl_program -> cl_kernel -> a launch ready to enqueue. The only module that
 * knows how kernels are found, specialised and built.
 *
 * Kernel-object model: each program keeps a pool of cl_kernel objects per kernel name. A call
 * checks one out per launch it plans, sets every argument while planning (no other thread holds
 * that object, so no lock is held), enqueues it, and checks it back in. OpenCL captures argument
 * values at enqueue, so a kernel object is reusable as soon as its enqueue returns. Pools grow to
 * the number of launches in flight at once in the host code, never more. */
#ifndef CLATTN_PROGRAM_H
#define CLATTN_PROGRAM_H
#include "context.h"

#include <stdbool.h>

struct clattn_program_cache;
struct clattn_kernel_pool;

/* `kernel_dir` (NULL: the sources embedded in the library) is copied. */
clattn_status clattn__program_cache_create(const char *kernel_dir, struct clattn_program_cache **out);
void clattn__program_cache_destroy(struct clattn_program_cache **cache);

/* Kernel arguments, collected by value while a launch is planned. */
#define CLATTN_MAX_KERNEL_ARGS 48
typedef struct clattn_kargs {
    cl_uint count;
    bool overflow; /* more than CLATTN_MAX_KERNEL_ARGS were added: a bug, refused at prepare */
    struct {
        size_t size;
        union {
            cl_mem mem;
            cl_ulong u;
            cl_uint ui;
            cl_int i;
            cl_float f;
            cl_ulong4 u4;
        } v;
    } arg[CLATTN_MAX_KERNEL_ARGS];
} clattn_kargs;

void clattn__arg_mem(clattn_kargs *a, cl_mem m);
void clattn__arg_ulong(clattn_kargs *a, cl_ulong x);
void clattn__arg_long(clattn_kargs *a, cl_long x);
void clattn__arg_int(clattn_kargs *a, cl_int x);
void clattn__arg_uint(clattn_kargs *a, cl_uint x);
void clattn__arg_float(clattn_kargs *a, cl_float x);
/* A tensor view as the kernels' VIEW(T, x) parameter takes it: buffer, element offset, and the
 * four strides as one ulong4 (0 along size-1 dims, see clattn__stride). NULL: an absent
 * optional view (NULL buffer, zeros). */
void clattn__arg_view(clattn_kargs *a, const clattn_tensor *t);

/* A kernel ready to launch: a checked-out cl_kernel with every argument set, and its NDRange. */
typedef struct clattn_launch {
    struct clattn_kernel_pool *pool; /* where the kernel object goes back */
    cl_kernel kernel;
    cl_uint dims;
    size_t global[3];
    size_t local[3];
    bool has_local;
} clattn_launch;

/* Builds (or finds) kernel file `file` specialised with `options`, checks out a `kernel` object,
 * checks the argument count against the kernel's, `local` against its work-group limit and its
 * local memory against the device's (CLATTN_ERROR_UNSUPPORTED_DEVICE), and sets every argument.
 * `local` may be NULL. On failure nothing is held. */
clattn_status clattn__launch_prepare(clattn_context *ctx, const char *file, const char *options,
                                     const char *kernel, const clattn_kargs *args, cl_uint dims,
                                     const size_t *global, const size_t *local, clattn_launch *out);
clattn_status clattn__launch_enqueue(cl_command_queue queue, const clattn_launch *l,
                                     cl_uint num_wait, const cl_event *wait_list,
                                     cl_event *event_out);
/* Checks the kernel object back in (NULL-safe on an empty launch). */
void clattn__launch_release(clattn_context *ctx, clattn_launch *l);

/* Builds kernel file `file` with `options`, or finds it built (a readiness check). */
clattn_status clattn__program_build(clattn_context *ctx, const char *file, const char *options);

#endif
