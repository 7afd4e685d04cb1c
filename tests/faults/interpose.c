/* Fault injection for tests/faults/fault_sweep.c, loaded with LD_PRELOAD: the OpenCL calls and
 * host allocations made by libclattn's own code (their return address lies in libclattn; CLBlast's,
 * PoCL's and the test's are passed through untouched) are counted while armed, and the Nth fails
 * as a driver or libc would (an OpenCL error code, or NULL). Releases, clSetUserEventStatus and
 * free never fail, as no implementation fails them on a valid object.
 *
 * The same counting keeps a balance per OpenCL object type of what libclattn (and CLBlast, whose
 * products' events libclattn takes over) created or retained minus what they released, from
 * which the sweep finds leaked objects.
 *
 * The sweep reaches this through dlsym(RTLD_DEFAULT, "fault_*"). */
#define _GNU_SOURCE
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <dlfcn.h>
#include <link.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* ---- State the sweep drives ------------------------------------------------------------ */

enum { FAULT_CL = 1, FAULT_ALLOC = 2 };
enum { OBJ_MEM, OBJ_KERNEL, OBJ_PROGRAM, OBJ_QUEUE, OBJ_EVENT, OBJ_CONTEXT, OBJ_DEVICE, OBJ_N };

static atomic_int armed;            /* which kinds are counted (FAULT_CL | FAULT_ALLOC) */
static atomic_long count;           /* calls counted since fault_arm */
static atomic_long fail_at;         /* the count that fails (0: none) */
static atomic_int failed_name_set;  /* the call that failed, for the report */
static const char *failed_name;
static atomic_int enqueued;         /* a clattn enqueue that may write a caller's buffer succeeded */
static atomic_long balance[OBJ_N];

void fault_arm(int kinds, long at)
{
    atomic_store(&count, 0);
    atomic_store(&fail_at, at);
    atomic_store(&failed_name_set, 0);
    failed_name = NULL;
    atomic_store(&enqueued, 0);
    atomic_store(&armed, kinds);
}

/* Stops counting; returns how many calls were counted. */
long fault_disarm(void)
{
    atomic_store(&armed, 0);
    return atomic_load(&count);
}

const char *fault_failed(void) { return atomic_load(&failed_name_set) ? failed_name : NULL; }
int fault_enqueued(void) { return atomic_load(&enqueued); }
long fault_balance(int type) { return atomic_load(&balance[type]); }
/* An object libclattn handed over to the caller (an event_out), who releases it. */
void fault_handed(int type) { atomic_fetch_sub(&balance[type], 1); }

/* ---- Is the caller libclattn? ---------------------------------------------------------- */

/* The executable ranges of libclattn ([0]), of CLBlast ([1]), whose events libclattn takes
 * over and releases (the object balance counts both libraries' references together), and of
 * libclattn_mpi ([2], when a program links it: its calls count as libclattn's). */
static uintptr_t lib_lo[3], lib_hi[3];
static atomic_int lib_found;

static int find_lib(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size, (void)data;
    static const char *names[3] = {"libclattn.so", "libclblast.so", "libclattn_mpi.so"};
    int which = -1;
    for (int i = 0; i < 3; i++)
        if (info->dlpi_name && strstr(info->dlpi_name, names[i]))
            which = i;
    if (which < 0)
        return 0;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            const uintptr_t a = info->dlpi_addr + ph->p_vaddr;
            if (a < lo)
                lo = a;
            if (a + ph->p_memsz > hi)
                hi = a + ph->p_memsz;
        }
    }
    lib_lo[which] = lo, lib_hi[which] = hi;
    return 0;
}

static bool from_lib(const void *ret, int which)
{
    if (!atomic_load(&lib_found)) {
        dl_iterate_phdr(find_lib, NULL);
        if (!lib_hi[0])
            return false;
        atomic_store(&lib_found, 1);
    }
    const uintptr_t a = (uintptr_t)ret;
    return a >= lib_lo[which] && a < lib_hi[which];
}

static bool from_clattn(const void *ret)
{
    return from_lib(ret, 0) || from_lib(ret, 2);
}

/* Counted in the object balance: libclattn's calls, and CLBlast's on events (its programs and
 * kernels live in a process-wide cache that clattn_context_destroy clears, whoever made them). */
static bool counted_caller(const void *ret, int type)
{
    return from_clattn(ret) || (type == OBJ_EVENT && from_lib(ret, 1));
}

/* Whether this call, made by libclattn, is the one to fail. */
static bool fails(int kind, const char *name)
{
    if (!(atomic_load(&armed) & kind))
        return false;
    const long n = atomic_fetch_add(&count, 1) + 1;
    if (n != atomic_load(&fail_at))
        return false;
    failed_name = name;
    atomic_store(&failed_name_set, 1);
    return true;
}

/* The next definition of `name` (the ICD loader's). Stored through a void ** as POSIX's dlsym
 * page shows, since ISO C has no cast from an object pointer to a function pointer. */
static void *real(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

/* ---- Host allocations ------------------------------------------------------------------- */

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

void *malloc(size_t n)
{
    if ((atomic_load(&armed) & FAULT_ALLOC) && from_clattn(__builtin_return_address(0)) &&
        fails(FAULT_ALLOC, "malloc"))
        return NULL;
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
    if ((atomic_load(&armed) & FAULT_ALLOC) && from_clattn(__builtin_return_address(0)) &&
        fails(FAULT_ALLOC, "calloc"))
        return NULL;
    return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
    if ((atomic_load(&armed) & FAULT_ALLOC) && from_clattn(__builtin_return_address(0)) &&
        fails(FAULT_ALLOC, "realloc"))
        return NULL;
    return __libc_realloc(p, n);
}

char *strdup(const char *s)
{
    if ((atomic_load(&armed) & FAULT_ALLOC) && from_clattn(__builtin_return_address(0)) &&
        fails(FAULT_ALLOC, "strdup"))
        return NULL;
    const size_t n = strlen(s) + 1;
    char *d = __libc_malloc(n);
    return d ? memcpy(d, s, n) : NULL;
}

/* ---- OpenCL ----------------------------------------------------------------------------- */

/* A call returning cl_int: fails with `code`. */
#define STATUS_CALL(name, code, params, args)                                                      \
    cl_int name params                                                                             \
    {                                                                                              \
        static cl_int(*fn) params;                                                                 \
        if (!fn)                                                                                   \
            *(void **)&fn = real(#name);                                                           \
        if (from_clattn(__builtin_return_address(0)) && fails(FAULT_CL, #name))                    \
            return code;                                                                           \
        return fn args;                                                                            \
    }

/* A call creating an object of `type`: fails with NULL and `code` in *errcode_ret. */
#define CREATE_CALL(name, ret_t, type, code, params, args)                                         \
    ret_t name params                                                                              \
    {                                                                                              \
        static ret_t(*fn) params;                                                                  \
        if (!fn)                                                                                   \
            *(void **)&fn = real(#name);                                                           \
        const bool mine = from_clattn(__builtin_return_address(0));                                \
        const bool counted = mine || counted_caller(__builtin_return_address(0), type);            \
        if (mine && fails(FAULT_CL, #name)) {                                                      \
            if (errcode_ret)                                                                       \
                *errcode_ret = code;                                                               \
            return NULL;                                                                           \
        }                                                                                          \
        ret_t r = fn args;                                                                         \
        if (counted && r)                                                                          \
            atomic_fetch_add(&balance[type], 1);                                                   \
        return r;                                                                                  \
    }

/* Retain (fallible) and release (never fails): the balance of libclattn's references. */
#define RETAIN_CALL(name, obj_t, type)                                                             \
    cl_int name(obj_t o)                                                                           \
    {                                                                                              \
        static cl_int (*fn)(obj_t);                                                                \
        if (!fn)                                                                                   \
            *(void **)&fn = real(#name);                                                           \
        const bool mine = from_clattn(__builtin_return_address(0));                                \
        const bool counted = mine || counted_caller(__builtin_return_address(0), type);            \
        if (mine && fails(FAULT_CL, #name))                                                        \
            return CL_OUT_OF_HOST_MEMORY;                                                          \
        const cl_int r = fn(o);                                                                    \
        if (counted && r == CL_SUCCESS)                                                            \
            atomic_fetch_add(&balance[type], 1);                                                   \
        return r;                                                                                  \
    }
#define RELEASE_CALL(name, obj_t, type)                                                            \
    cl_int name(obj_t o)                                                                           \
    {                                                                                              \
        static cl_int (*fn)(obj_t);                                                                \
        if (!fn)                                                                                   \
            *(void **)&fn = real(#name);                                                           \
        const bool counted = counted_caller(__builtin_return_address(0), type);                    \
        const cl_int r = fn(o);                                                                    \
        if (counted && r == CL_SUCCESS)                                                            \
            atomic_fetch_sub(&balance[type], 1);                                                   \
        return r;                                                                                  \
    }

/* An enqueue whose event, when asked for, libclattn owns. `writes`: it may write a caller's
 * buffer (a kernel, or a barrier in front of CLBlast's products on a lane). */
#define ENQUEUE_CALL(name, writes, params, args)                                                   \
    cl_int name params                                                                             \
    {                                                                                              \
        static cl_int(*fn) params;                                                                 \
        if (!fn)                                                                                   \
            *(void **)&fn = real(#name);                                                           \
        const bool mine = from_clattn(__builtin_return_address(0));                                \
        const bool counted = mine || counted_caller(__builtin_return_address(0), OBJ_EVENT);       \
        if (mine && fails(FAULT_CL, #name))                                                        \
            return CL_OUT_OF_RESOURCES;                                                            \
        const cl_int r = fn args;                                                                  \
        if (counted && r == CL_SUCCESS && event)                                                   \
            atomic_fetch_add(&balance[OBJ_EVENT], 1);                                              \
        if (mine && r == CL_SUCCESS) {                                                             \
            if (writes)                                                                            \
                atomic_store(&enqueued, 1);                                                        \
        }                                                                                          \
        return r;                                                                                  \
    }

CREATE_CALL(clCreateBuffer, cl_mem, OBJ_MEM, CL_MEM_OBJECT_ALLOCATION_FAILURE,
            (cl_context c, cl_mem_flags f, size_t n, void *h, cl_int *errcode_ret),
            (c, f, n, h, errcode_ret))
CREATE_CALL(clCreateSubBuffer, cl_mem, OBJ_MEM, CL_OUT_OF_RESOURCES,
            (cl_mem b, cl_mem_flags f, cl_buffer_create_type t, const void *i, cl_int *errcode_ret),
            (b, f, t, i, errcode_ret))
CREATE_CALL(clCreateKernel, cl_kernel, OBJ_KERNEL, CL_OUT_OF_HOST_MEMORY,
            (cl_program p, const char *n, cl_int *errcode_ret), (p, n, errcode_ret))
CREATE_CALL(clCreateProgramWithSource, cl_program, OBJ_PROGRAM, CL_OUT_OF_HOST_MEMORY,
            (cl_context c, cl_uint n, const char **s, const size_t *l, cl_int *errcode_ret),
            (c, n, s, l, errcode_ret))
CREATE_CALL(clCreateProgramWithBinary, cl_program, OBJ_PROGRAM, CL_OUT_OF_HOST_MEMORY,
            (cl_context c, cl_uint n, const cl_device_id *d, const size_t *l,
             const unsigned char **b, cl_int *st, cl_int *errcode_ret),
            (c, n, d, l, b, st, errcode_ret))
CREATE_CALL(clCreateCommandQueue, cl_command_queue, OBJ_QUEUE, CL_OUT_OF_HOST_MEMORY,
            (cl_context c, cl_device_id d, cl_command_queue_properties p, cl_int *errcode_ret),
            (c, d, p, errcode_ret))
CREATE_CALL(clCreateUserEvent, cl_event, OBJ_EVENT, CL_OUT_OF_HOST_MEMORY,
            (cl_context c, cl_int *errcode_ret), (c, errcode_ret))
CREATE_CALL(clCreateContext, cl_context, OBJ_CONTEXT, CL_OUT_OF_HOST_MEMORY,
            (const cl_context_properties *p, cl_uint n, const cl_device_id *d,
             void(CL_CALLBACK *cb)(const char *, const void *, size_t, void *), void *u,
             cl_int *errcode_ret),
            (p, n, d, cb, u, errcode_ret))

RETAIN_CALL(clRetainMemObject, cl_mem, OBJ_MEM)
RETAIN_CALL(clRetainKernel, cl_kernel, OBJ_KERNEL)
RETAIN_CALL(clRetainProgram, cl_program, OBJ_PROGRAM)
RETAIN_CALL(clRetainCommandQueue, cl_command_queue, OBJ_QUEUE)
RETAIN_CALL(clRetainEvent, cl_event, OBJ_EVENT)
RETAIN_CALL(clRetainContext, cl_context, OBJ_CONTEXT)
RETAIN_CALL(clRetainDevice, cl_device_id, OBJ_DEVICE)
RELEASE_CALL(clReleaseMemObject, cl_mem, OBJ_MEM)
RELEASE_CALL(clReleaseKernel, cl_kernel, OBJ_KERNEL)
RELEASE_CALL(clReleaseProgram, cl_program, OBJ_PROGRAM)
RELEASE_CALL(clReleaseCommandQueue, cl_command_queue, OBJ_QUEUE)
RELEASE_CALL(clReleaseEvent, cl_event, OBJ_EVENT)
RELEASE_CALL(clReleaseContext, cl_context, OBJ_CONTEXT)
RELEASE_CALL(clReleaseDevice, cl_device_id, OBJ_DEVICE)

ENQUEUE_CALL(clEnqueueNDRangeKernel, true,
             (cl_command_queue q, cl_kernel k, cl_uint dim, const size_t *off, const size_t *g,
              const size_t *l, cl_uint nw, const cl_event *wl, cl_event *event),
             (q, k, dim, off, g, l, nw, wl, event))
ENQUEUE_CALL(clEnqueueMarkerWithWaitList, false,
             (cl_command_queue q, cl_uint nw, const cl_event *wl, cl_event *event),
             (q, nw, wl, event))
ENQUEUE_CALL(clEnqueueBarrierWithWaitList, true,
             (cl_command_queue q, cl_uint nw, const cl_event *wl, cl_event *event),
             (q, nw, wl, event))
/* Used by libclattn_mpi only (its staging and accumulators: none is a caller's buffer). */
ENQUEUE_CALL(clEnqueueReadBuffer, false,
             (cl_command_queue q, cl_mem b, cl_bool blocking, size_t off, size_t n, void *p,
              cl_uint nw, const cl_event *wl, cl_event *event),
             (q, b, blocking, off, n, p, nw, wl, event))
ENQUEUE_CALL(clEnqueueWriteBuffer, false,
             (cl_command_queue q, cl_mem b, cl_bool blocking, size_t off, size_t n, const void *p,
              cl_uint nw, const cl_event *wl, cl_event *event),
             (q, b, blocking, off, n, p, nw, wl, event))
ENQUEUE_CALL(clEnqueueFillBuffer, false,
             (cl_command_queue q, cl_mem b, const void *pat, size_t ps, size_t off, size_t n,
              cl_uint nw, const cl_event *wl, cl_event *event),
             (q, b, pat, ps, off, n, nw, wl, event))

STATUS_CALL(clBuildProgram, CL_OUT_OF_HOST_MEMORY,
            (cl_program p, cl_uint n, const cl_device_id *d, const char *o,
             void(CL_CALLBACK *cb)(cl_program, void *), void *u),
            (p, n, d, o, cb, u))
STATUS_CALL(clSetKernelArg, CL_OUT_OF_RESOURCES, (cl_kernel k, cl_uint i, size_t n, const void *v),
            (k, i, n, v))
STATUS_CALL(clSetEventCallback, CL_OUT_OF_HOST_MEMORY,
            (cl_event e, cl_int t, void(CL_CALLBACK *cb)(cl_event, cl_int, void *), void *u),
            (e, t, cb, u))
STATUS_CALL(clFlush, CL_OUT_OF_RESOURCES, (cl_command_queue q), (q))
STATUS_CALL(clFinish, CL_OUT_OF_RESOURCES, (cl_command_queue q), (q))
STATUS_CALL(clGetPlatformIDs, CL_OUT_OF_HOST_MEMORY, (cl_uint n, cl_platform_id *p, cl_uint *m),
            (n, p, m))
STATUS_CALL(clGetDeviceIDs, CL_OUT_OF_HOST_MEMORY,
            (cl_platform_id p, cl_device_type t, cl_uint n, cl_device_id *d, cl_uint *m),
            (p, t, n, d, m))
#define INFO_CALL(name, obj_t)                                                                     \
    STATUS_CALL(name, CL_OUT_OF_HOST_MEMORY, (obj_t o, cl_uint w, size_t n, void *v, size_t *r),   \
                (o, w, n, v, r))
INFO_CALL(clGetPlatformInfo, cl_platform_id)
INFO_CALL(clGetDeviceInfo, cl_device_id)
INFO_CALL(clGetContextInfo, cl_context)
INFO_CALL(clGetCommandQueueInfo, cl_command_queue)
INFO_CALL(clGetMemObjectInfo, cl_mem)
INFO_CALL(clGetProgramInfo, cl_program)
INFO_CALL(clGetKernelInfo, cl_kernel)
INFO_CALL(clGetEventInfo, cl_event)
STATUS_CALL(clGetProgramBuildInfo, CL_OUT_OF_HOST_MEMORY,
            (cl_program p, cl_device_id d, cl_uint w, size_t n, void *v, size_t *r),
            (p, d, w, n, v, r))
STATUS_CALL(clGetKernelWorkGroupInfo, CL_OUT_OF_HOST_MEMORY,
            (cl_kernel k, cl_device_id d, cl_uint w, size_t n, void *v, size_t *r),
            (k, d, w, n, v, r))
