/* Kernel source -> cl_program -> cl_kernel, and the launch of a kernel. The only module that
 * knows how kernels are found, specialised and built. */
#ifndef CLATTN_PROGRAM_H
#define CLATTN_PROGRAM_H
#include "context.h"

struct clattn_program_cache;

clattn_status clattn__program_cache_create(struct clattn_program_cache **out);
void clattn__program_cache_destroy(struct clattn_program_cache **cache);

/* One kernel argument, as clSetKernelArg takes it. */
typedef struct clattn_karg {
    size_t size;
    const void *value;
} clattn_karg;
#define CLATTN_KARG(x) {sizeof(x), &(x)}

/* Builds `file` (a kernels/ file name without ".cl") with `options` (the -D specialisation) on the
 * context's device, or finds it in the cache. Used to make sure every kernel a call needs builds
 * before the call enqueues anything. */
clattn_status clattn__program_prepare(clattn_context *ctx, const char *file, const char *options);

/* The work-group size the device allows for a kernel (CL_KERNEL_WORK_GROUP_SIZE). */
clattn_status clattn__kernel_work_group_size(clattn_context *ctx, const char *file,
                                             const char *kernel, const char *options,
                                             size_t *out);

/* Sets the arguments of kernel `kernel` from (file, options) and enqueues it, atomically with
 * respect to other threads using the context. `local` may be NULL. */
clattn_status clattn__launch(clattn_context *ctx, cl_command_queue queue, const char *file,
                             const char *kernel, const char *options, cl_uint work_dim,
                             const size_t *global, const size_t *local, const clattn_karg *args,
                             cl_uint num_args, cl_uint num_wait, const cl_event *wait_list,
                             cl_event *event_out);

#endif
