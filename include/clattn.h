/*
 * clattn — Transformer attention on any OpenCL 1.2+ device.
 *
 * The whole public API. Everything here is C11 and usable from C++. docs/ARCHITECTURE.md tells
 * how the library is built inside; this header is the contract.
 *
 * Conventions:
 *  - Tokens are ROWS (row-major, as in PyTorch): Q = X·W_Qᵀ, scores S = scale·Q·Kᵀ have one row per
 *    query and one column per key, and the softmax runs along each row. Documents that write tokens
 *    as column vectors (Q = W_Q·X, softmax per column) describe the same computation transposed.
 *  - The caller's OpenCL objects (cl_context, cl_device_id, cl_command_queue, cl_mem) are passed by
 *    value. The library retains what it keeps and releases only its own references.
 *  - Every call that enqueues work ends like clEnqueue*: (queue, num_wait, wait_list, event_out).
 *    It returns once the work is enqueued and never waits on or flushes the caller's queue. It is
 *    correct on in-order and out-of-order queues.
 *  - Every argument is validated, and every kernel a call needs is built (CLBlast's included),
 *    before anything is enqueued. On an error return nothing was enqueued, the caller's buffers
 *    are untouched, and *event_out is left unchanged. The one exception: an enqueue itself
 *    failing after the call's first one (the driver's CL_OUT_OF_RESOURCES, say), or the callback
 *    that opens a CLBlast product's gate failing to be set right after its marker. The call then
 *    returns that error and no event; the steps already enqueued still run and may write the
 *    call's own outputs and a workspace it was given, nothing else of the caller's, and the
 *    library's own state (a KV cache's lengths, its scratch) does not change. Wait for the
 *    queue (and clattn_context_finish, for CLBlast's products) before reusing those outputs.
 *  - Events: a wait list holding an event that has already failed is refused with
 *    CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST. One that fails after the call makes the call's
 *    event fail too (and every event of the library's that depends on it); the process lives on
 *    PoCL 3.1, which otherwise aborts when a failure reaches an event already released, because the
 *    library keeps each call's events until its work has ended. After such a failure the call's
 *    outputs, and a KV cache's contents and lengths, are unspecified: reset or recreate the cache.
 *    Matrix products run by CLBlast go to an in-order queue of the library's ("lane") behind a
 *    user event that opens when the call's wait list and, on an in-order queue, what came before
 *    on it have ended; after a failed wait list they still run, and may write the call's outputs
 *    after its event has failed: clattn_context_finish waits for them. Calls from one in-order
 *    queue share a lane; calls whose products may have to wait get a lane of their own, so that
 *    no call's products wait for another's wait list.
 *  - Buffers the library reads may not be CL_MEM_WRITE_ONLY, nor those it writes CL_MEM_READ_ONLY
 *    (CLATTN_ERROR_INVALID_ARGUMENT). It reads every input, key lengths, a workspace, the unfused
 *    path's probabilities, clattn_mask's S (masked in place) and every output a matrix product
 *    writes, which CLBlast may read back: clattn_linear's Y, clattn_scores' S,
 *    clattn_weighted_sum's O, the unfused path's O, a layer's fp32 output and its head_weights.
 *    Outputs only clattn's kernels write may be write-only: the fused path's O and lse, softmax's
 *    P and lse, merge's outputs, a KV cache's attention output, a layer's averaged weights.
 *  - Nothing in the library prints, exits or aborts. Diagnostics (kernel build logs) go to the log
 *    callback given in clattn_context_params. The one exception is CLBlast's: when one of its
 *    OpenCL calls fails it writes a line to stdout or stderr ("CLBlast: OpenCL error ...") before
 *    clattn gets its status; clattn's own engine (the default on CPU devices) writes nothing.
 *  - Status: 0 is success; OpenCL error codes (negative) pass through unchanged; the library's own
 *    codes are positive (1000 and up), where no OpenCL or Khronos extension code can ever be.
 *  - Matrix products (projections, the unfused path's scores and weighted sums) run on clattn's
 *    own kernel on CPU devices, where CLBlast's kernels reach a small fraction of the device's
 *    peak, and on CLBlast everywhere else (GPUs of every vendor); clattn_kernel_config chooses
 *    otherwise. Both multiply as IEEE 754 says: 0 · Inf is NaN.
 *
 * ABI policy (CHANGELOG.md records each change):
 *  - The shared library's SONAME is libclattn.so.CLATTN_ABI_VERSION. That number grows with every
 *    release that breaks binary compatibility: a function removed or its signature changed, a
 *    struct's size or member offsets changed, a status code renumbered, a documented meaning
 *    changed. Adding functions, status codes or enum values does not change it.
 *  - Params structs (clattn_*_params, clattn_kernel_config) are initialised by their *_default()
 *    function and end in reserved members that must be zero (a call refuses them otherwise with
 *    CLATTN_ERROR_INVALID_ARGUMENT). New members take the place of reserved ones, keeping the size
 *    and every offset, and zero always means what the release before meant. Structs the library
 *    fills (clattn_device_info) have reserved space too, which it sets to zero.
 *  - A program compiled against one header can check what it runs with: clattn_version() and
 *    clattn_abi_version().
 */
#ifndef CLATTN_H
#define CLATTN_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the exported functions; everything else in the shared library is hidden. */
#if defined(CLATTN_BUILDING_LIBRARY) && defined(__GNUC__)
#define CLATTN_API __attribute__((visibility("default")))
#else
#define CLATTN_API
#endif

#define CLATTN_VERSION_MAJOR 0
#define CLATTN_VERSION_MINOR 2
#define CLATTN_VERSION_PATCH 0
/* The binary interface this header describes (the SONAME's number; see the ABI policy above). */
#define CLATTN_ABI_VERSION 1

/* Library version as "MAJOR.MINOR.PATCH". Static storage. */
CLATTN_API const char *clattn_version(void);
/* The ABI version of the library actually loaded: equal to CLATTN_ABI_VERSION when the program
 * runs with the library it was compiled for. */
CLATTN_API int clattn_abi_version(void);
/* sizeof the public struct named `name` ("clattn_sdpa_params", every struct this header defines
 * whose members a caller sets or reads) in the library actually loaded; 0 for an unknown name or
 * NULL. For bindings that mirror the structs (the Python package checks each one at import). */
CLATTN_API size_t clattn_struct_size(const char *name);

/* ------------------------------------------------------------------------------------------------
 * Status codes
 * ----------------------------------------------------------------------------------------------*/

/* X(name, value, message): the one list that the enum, clattn_status_name() and
 * clattn_status_string() are generated from. Library codes are positive: OpenCL's codes and every
 * Khronos extension's are negative, so a code passed through from OpenCL never collides. */
#define CLATTN_STATUS_LIST(X)                                                                         \
    X(CLATTN_SUCCESS, 0, "success")                                                                   \
    X(CLATTN_ERROR_INVALID_ARGUMENT, 1000, "invalid argument (null handle, pointer or bad enum)")     \
    X(CLATTN_ERROR_INVALID_SHAPE, 1001, "tensor shapes do not agree with each other")                 \
    X(CLATTN_ERROR_INVALID_STRIDE, 1002, "output view reaches some element twice")                   \
    X(CLATTN_ERROR_VIEW_OUT_OF_BOUNDS, 1003, "tensor view runs past the end of its buffer")           \
    X(CLATTN_ERROR_SIZE_OVERFLOW, 1004, "element count or byte size overflows size_t")                \
    X(CLATTN_ERROR_CONTEXT_MISMATCH, 1005, "buffer or queue belongs to another context or device")    \
    X(CLATTN_ERROR_UNSUPPORTED_DTYPE, 1006, "data type not supported by this operation")              \
    X(CLATTN_ERROR_UNSUPPORTED_LAYOUT, 1007, "a view's strides or size do not suit this path")        \
    X(CLATTN_ERROR_UNSUPPORTED_PATH, 1008, "the requested attention path cannot run this call")       \
    X(CLATTN_ERROR_HEAD_MISMATCH, 1009, "query heads are not a multiple of key/value heads")          \
    X(CLATTN_ERROR_MASK_SHAPE, 1010, "mask does not broadcast to [B, H, Lq, Lk]")                     \
    X(CLATTN_ERROR_BUILD_FAILED, 1011, "an OpenCL kernel failed to build (log sent to callback)")     \
    X(CLATTN_ERROR_KERNEL_NOT_FOUND, 1012, "no kernel source of that name")                           \
    X(CLATTN_ERROR_BLAS, 1013, "CLBlast returned an error")                                           \
    X(CLATTN_ERROR_OUT_OF_HOST_MEMORY, 1014, "host memory allocation failed")                         \
    X(CLATTN_ERROR_ALLOCATION_TOO_LARGE, 1015, "needed buffer exceeds CL_DEVICE_MAX_MEM_ALLOC_SIZE")   \
    X(CLATTN_ERROR_WORKSPACE_TOO_SMALL, 1016, "caller-given workspace is smaller than needed")        \
    X(CLATTN_ERROR_NO_DEVICE, 1017, "no usable OpenCL device found")                                  \
    X(CLATTN_ERROR_DEVICE_NOT_FOUND, 1018, "CLATTN_DEVICE names no device")                          \
    X(CLATTN_ERROR_UNSUPPORTED_DEVICE, 1019, "the device cannot run a kernel this call needs")        \
    X(CLATTN_ERROR_CACHE_FULL, 1020, "appending would pass the KV cache's capacity")                  \
    X(CLATTN_ERROR_INTERNAL, 1021, "internal inconsistency in clattn (a bug: please report it)")  \
    X(CLATTN_ERROR_IO, 1022, "a file of clattn's could not be read or written")                     \
    X(CLATTN_ERROR_POOL_EXHAUSTED, 1023, "the paged KV cache has too few free pages for the append") \
    X(CLATTN_ERROR_COMMUNICATION, 1024, "a collective call's communication failed (clattn_mpi)")

typedef int32_t clattn_status;

enum clattn_status_code {
#define CLATTN_X_ENUM(name, value, msg) name = value,
    CLATTN_STATUS_LIST(CLATTN_X_ENUM)
#undef CLATTN_X_ENUM
};

/* Symbolic name of a status ("CLATTN_ERROR_INVALID_SHAPE", "CL_OUT_OF_RESOURCES", ...), or
 * "CLATTN_UNKNOWN_STATUS". Never NULL; static storage. */
CLATTN_API const char *clattn_status_name(clattn_status status);
/* One-line human-readable message for a status. Never NULL; static storage. */
CLATTN_API const char *clattn_status_string(clattn_status status);

/* ------------------------------------------------------------------------------------------------
 * Tensor views
 * ----------------------------------------------------------------------------------------------*/

typedef enum clattn_dtype {
    CLATTN_F32 = 1, /* IEEE binary32 */
    CLATTN_F16 = 2, /* IEEE binary16 storage, arithmetic in float: clattn_sdpa's Q, K, V and O
                     * (all four together, fused path), an fp16 MHA layer, an fp16 KV cache;
                     * the step operations take CLATTN_F32 */
    CLATTN_BF16 = 3, /* bfloat16 (the upper half of a binary32) storage, arithmetic in float: a
                      * KV cache's storage (appends take CLATTN_BF16, or CLATTN_F32 rounded to
                      * nearest even) */
    CLATTN_Q8 = 4,   /* int8 with one float scale per row: a KV cache's storage only. Each
                      * (token, head) row of D values is kept as D int8 q_d and a scale
                      * s = max_d |x_d| / 127 (x_d = s * q_d, q_d = x_d / s rounded to nearest
                      * even; a row of zeros has s = 0); appends take CLATTN_F32, CLATTN_F16 or
                      * CLATTN_BF16 and quantize (after RoPE, when the cache rotates keys);
                      * attention dequantizes as it loads and computes in float. A non-finite
                      * value makes its row's scale non-finite. */
} clattn_dtype;

/* Bytes per element of a dtype, 0 for an unknown one (CLATTN_Q8: 1, the int8; each row also
 * holds its 4-byte scale). */
CLATTN_API size_t clattn_dtype_size(clattn_dtype dtype);

/*
 * A 4-D strided view into a caller's cl_mem. Plain data; the view owns nothing.
 *
 * dims    = [batch, heads, seq, feature] (feature = head_dim, or the embedding for linear).
 * offset  = in ELEMENTS from the start of the buffer.
 * strides = in ELEMENTS per step along each dim; 0 broadcasts (inputs only).
 *
 * Both common layouts are views of the same buffer, so projections feed attention without copies:
 *   [B, H, T, D] contiguous: strides {H*T*D, T*D, D, 1}
 *   [B, T, H*D] packed:      strides {T*H*D, D, H*D, 1}   (head h starts at feature h*D)
 * A dim of size 0 makes the view empty; operations on empty outputs are valid no-ops.
 */
typedef struct clattn_tensor {
    cl_mem buffer;
    size_t offset;
    clattn_dtype dtype;
    size_t dims[4];
    size_t strides[4];
} clattn_tensor;

/* A contiguous [B, H, T, D] view starting at element `offset`. */
static inline clattn_tensor clattn_tensor_bhtd(cl_mem buffer, size_t offset, size_t B, size_t H,
                                               size_t T, size_t D)
{
    clattn_tensor t = {buffer, offset, CLATTN_F32, {B, H, T, D}, {H * T * D, T * D, D, 1}};
    return t;
}

/* Head-split view of a packed [B, T, H*D] buffer (the layout a projection writes). */
static inline clattn_tensor clattn_tensor_bthd(cl_mem buffer, size_t offset, size_t B, size_t T,
                                               size_t H, size_t D)
{
    clattn_tensor t = {buffer, offset, CLATTN_F32, {B, H, T, D}, {T * H * D, D, H * D, 1}};
    return t;
}

/* ------------------------------------------------------------------------------------------------
 * Context
 * ----------------------------------------------------------------------------------------------*/

typedef enum clattn_log_level {
    CLATTN_LOG_ERROR = 0,
    CLATTN_LOG_WARN = 1,
    CLATTN_LOG_INFO = 2,
    CLATTN_LOG_DEBUG = 3,
} clattn_log_level;

/* Receives diagnostics such as kernel build logs. `msg` is valid only during the call. May be
 * called from any thread that calls into the library, possibly concurrently (never with the
 * context's internal lock held); while it runs, the call that reported stays blocked. */
typedef void (*clattn_log_fn)(void *user, clattn_log_level level, const char *msg);

/* Which layout of the fused attention kernel runs (see README "Two paths"). */
typedef enum clattn_flash_variant {
    CLATTN_FLASH_VARIANT_AUTO = 0, /* by device type: CPU devices the CPU layout, others the GPU's */
    CLATTN_FLASH_VARIANT_CPU = 1,  /* explicit vectors per work-item, no local memory */
    CLATTN_FLASH_VARIANT_GPU = 2,  /* work-groups staging K/V tiles in local memory */
} clattn_flash_variant;

/* What runs the matrix products (projections, and the unfused path's scores and weighted sum). */
typedef enum clattn_gemm_engine {
    CLATTN_GEMM_ENGINE_AUTO = 0,    /* clattn's own kernel on CPU devices, CLBlast on the others */
    CLATTN_GEMM_ENGINE_CLBLAST = 1, /* CLBlast's SGEMM routines */
    CLATTN_GEMM_ENGINE_CLATTN = 2,  /* clattn's own kernel (register tiles for CPUs' vector units) */
} clattn_gemm_engine;

/*
 * Kernel configuration overrides, for tuning and for tests that force a configuration on one
 * context. Every member's zero means "not overridden". Precedence, member by member: these
 * params, then the environment (CLATTN_FLASH_VARIANT=cpu|gpu, CLATTN_FLASH_BLOCK_K,
 * CLATTN_FLASH_WG, CLATTN_GEMM_ENGINE=clblast|clattn, CLATTN_GEMM_TILE=ROWSxVECTORSxBLOCKS; read
 * once, when the context is created), then the tune file clattn-tune wrote for this device,
 * driver and library version (see clattn_tuning), then the library's table by device type. A
 * value the device cannot run makes the calls that need it fail with
 * CLATTN_ERROR_UNSUPPORTED_DEVICE (or fall back, for AUTO paths), never crash.
 */
typedef struct clattn_kernel_config {
    clattn_flash_variant flash_variant;
    uint32_t flash_block_k; /* keys per block of the fused kernel (1..4096; the CPU variant rounds
                             * up to a multiple of 8) */
    uint32_t flash_wg;      /* work-items per work-group of the GPU variant (1..4096) */
    clattn_gemm_engine gemm_engine;
    /* clattn's GEMM kernel: a work-item's register tile is gemm_rows rows (1..16) by
     * gemm_vectors vectors (1..8) of the device's native float width, and it computes
     * gemm_blocks (1..64) such tiles one after the other. Set all three or none. */
    uint32_t gemm_rows, gemm_vectors, gemm_blocks;
    uint32_t reserved[9];   /* must be zero */
} clattn_kernel_config;

typedef struct clattn_context_params {
    /* The caller's context and device, or both NULL to let the library pick a device: env
     * CLATTN_DEVICE ("P:D" platform/device indices, or a substring of the device name), else the
     * first GPU, else the first CPU, else the first device of any type. If `context` is set and
     * `device` is NULL, the context must hold exactly one device. */
    cl_context context;
    cl_device_id device;
    clattn_log_fn log;      /* may be NULL: diagnostics are dropped */
    void *log_user;         /* passed to `log` unchanged */
    clattn_log_level log_level; /* messages above this level are not sent */
    /* The on-disk cache of compiled kernels. cache_dir NULL: $CLATTN_CACHE_DIR ("off" turns the
     * cache off), else $XDG_CACHE_HOME/clattn, else ~/.cache/clattn. A path: that directory
     * (copied at create). disk_cache_off nonzero: no disk cache, whatever the rest says. */
    const char *cache_dir;
    int disk_cache_off;
    clattn_kernel_config kernels; /* overrides; all zero (the default) = none */
    /* Nonzero: apply the CLBlast parameters of the tune file (clattn_tuning.clblast_xgemm) to
     * CLBlast's SGEMM for this device. CLBlast keeps such parameters process-wide per device,
     * so this retunes the host program's own CLBlast calls too: hence opt-in. */
    int clblast_tuning;
    void *reserved[7];      /* must be zero (set by clattn_context_params_default) */
} clattn_context_params;

CLATTN_API clattn_context_params clattn_context_params_default(void);

/*
 * A clattn context: one OpenCL device in one cl_context, plus the library's compiled-program cache.
 *
 * Ownership: created by clattn_context_create, freed by clattn_context_destroy. It retains the
 * caller's cl_context and cl_device_id and releases only those references, so the caller's
 * objects stay valid after destroy. It must outlive all work the library enqueued with it (destroy
 * it after the queues that ran its work have finished).
 * Thread safety: every function taking a clattn_context may be called from several threads at
 * once on the same context, provided the buffers they write do not overlap. Each call sets the
 * arguments of kernel objects no other thread holds, so calls never wait for each other's
 * launches; a kernel being compiled (seconds on some devices) holds up only the calls that need
 * that same kernel. clattn_context_destroy must not race with any other use.
 * Destroying a context that ran matrix products clears CLBlast's process-wide program cache (its
 * programs would otherwise keep the cl_context alive forever): other contexts then recompile
 * CLBlast's kernels on their next product.
 */
typedef struct clattn_context clattn_context;

CLATTN_API clattn_status clattn_context_create(const clattn_context_params *params, clattn_context **out);
/* NULL-safe; sets *ctx = NULL. */
CLATTN_API void clattn_context_destroy(clattn_context **ctx);

/* Blocks until all the work the library has put on queues of its own (CLBlast's products; see
 * "Events" above) has ended. Flush the queues the calls were made on first: that work waits for
 * them. Needed only after a failed wait list, before reusing the failed call's outputs; any
 * thread, any time. */
CLATTN_API clattn_status clattn_context_finish(clattn_context *ctx);

/* The cl_context / cl_device_id the context uses (borrowed: do not release). */
CLATTN_API cl_context clattn_context_cl_context(const clattn_context *ctx);
CLATTN_API cl_device_id clattn_context_cl_device(const clattn_context *ctx);

/* What the library queried from the device once, at create. Strings are NUL-terminated and
 * truncated to fit. */
typedef struct clattn_device_info {
    char name[256];
    char vendor[256];
    char device_version[256];
    char driver_version[256];
    char platform_name[256];
    char platform_version[256];
    cl_device_type type;
    cl_uint compute_units;
    size_t max_work_group_size;
    cl_ulong local_mem_size;     /* bytes */
    cl_ulong max_mem_alloc_size; /* bytes: the largest single buffer */
    cl_ulong global_mem_size;    /* bytes */
    int has_fp16;                /* cl_khr_fp16 (arithmetic); fp16 storage needs no extension */
    int has_fp64;                /* cl_khr_fp64 */
    int has_subgroups;           /* cl_khr_subgroups or cl_intel_subgroups */
    uint64_t reserved[32];       /* set to zero; later releases fill these in */
} clattn_device_info;

CLATTN_API clattn_status clattn_context_device_info(const clattn_context *ctx, clattn_device_info *out);

/* The kernel configuration overrides in force for this context (params, environment, tune file;
 * zero members follow the device table) and the disk cache directory ("" when the cache is off;
 * static to the context, valid until it is destroyed). Either pointer may be NULL. */
CLATTN_API clattn_status clattn_context_config(const clattn_context *ctx, clattn_kernel_config *kernels,
                                               const char **cache_dir);
/* The same as text for people (clattn-info): each setting in force, the value the kernels use
 * and where it came from (params, environment, tune file, table), one per line, NUL-terminated
 * and truncated to `cap`. */
CLATTN_API clattn_status clattn_context_describe_config(const clattn_context *ctx, char *buf,
                                                        size_t cap);

/*
 * Tuning results, as clattn-tune finds them for a device: stored in the disk cache's directory
 * in a file named by a hash of the device's name, its driver and platform versions and the
 * library's version (so a new driver or release starts from the table again), read when a
 * context on that device is created. The directory is trusted as the disk cache is.
 */
typedef struct clattn_tuning {
    clattn_kernel_config kernels; /* the settings found; zero members: the table's */
    /* CLBlast's Xgemm parameters found ("NAME=VALUE NAME=VALUE ...", all 16 of them, or ""):
     * applied only by contexts created with clattn_context_params.clblast_tuning. */
    char clblast_xgemm[512];
    uint64_t reserved[8];         /* zero */
} clattn_tuning;

/* Writes `tuning` as the tune file of the context's device (replacing any), through a temporary
 * name and rename(): CLATTN_ERROR_INVALID_ARGUMENT when the context has no disk cache directory,
 * CLATTN_ERROR_IO when the file cannot be written. The context itself keeps the settings it was
 * created with. */
CLATTN_API clattn_status clattn_tuning_save(const clattn_context *ctx, const clattn_tuning *tuning);
/* Reads the tune file of the context's device into *tuning (all zero when there is none). */
CLATTN_API clattn_status clattn_tuning_load(const clattn_context *ctx, clattn_tuning *tuning);

/* Names of the kernel files compiled into the library ("softmax", "mask", ...; the common prelude
 * every file is built with is not one of them). */
CLATTN_API size_t clattn_kernel_count(void);
CLATTN_API const char *clattn_kernel_name(size_t index); /* NULL when index >= count */

/* Builds (or finds in the context's caches) one kernel file with its default specialisation: a
 * readiness check (clattn-info times it). It is not what a call runs: to have every kernel a call
 * needs ready before its first real use, use the call's own *_prepare function (clattn_sdpa_prepare,
 * clattn_linear_prepare, clattn_mha_prepare, clattn_kv_cache_prepare). Those build clattn's
 * kernels and have CLBlast compile the routines the call's products use (one tiny product per
 * routine and context, on a queue of the library's own); a driver may still specialise a kernel
 * for a new work-group size when a command first runs (PoCL does, caching the result). A
 * failure's build log goes to the log callback. */
CLATTN_API clattn_status clattn_kernel_build(clattn_context *ctx, const char *name);

/* ------------------------------------------------------------------------------------------------
 * Attention steps, each a separate operation
 *
 * All tensors are CLATTN_F32. Outputs must not overlap inputs unless a call says otherwise.
 * ----------------------------------------------------------------------------------------------*/

/* "Projection": Y = X·Wᵀ (+ bias).
 *   X    [d0, d1, M, K]   W [1, 1, N, K] (PyTorch Linear layout: [out_features, in_features])
 *   bias [1, 1, 1, N] or NULL
 *   Y    [d0, d1, M, N]
 * The product runs on the context's matrix-product engine (clattn_gemm_engine: clattn's own
 * kernel on CPU devices, CLBlast elsewhere); W is repacked for it on every call: weights used more
 * than once are faster prepared (clattn_weights, clattn_linear_prepared). */
CLATTN_API clattn_status clattn_linear(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *X,
                            const clattn_tensor *W, const clattn_tensor *bias,
                            const clattn_tensor *Y, cl_uint num_wait, const cl_event *wait_list,
                            cl_event *event_out);
/* Validates the same arguments as clattn_linear and builds what it would run; enqueues nothing. */
CLATTN_API clattn_status clattn_linear_prepare(clattn_context *ctx, const clattn_tensor *X,
                                               const clattn_tensor *W, const clattn_tensor *bias,
                                               const clattn_tensor *Y);

/*
 * A weight matrix prepared for clattn_linear_prepared: W [1, 1, N, K] (PyTorch Linear layout)
 * copied, once, into device memory of the object's own, in the layout the context's matrix-product
 * engine reads fastest (clattn's own kernel: Wᵀ in panels of columns; CLBlast: Wᵀ as a plain
 * [K, N] matrix), as fp32 whatever the source dtype (CLATTN_F32 or CLATTN_F16). It takes
 * clattn_weights_bytes() of device memory: N rounded up to the panel width (64 on AVX-512 CPUs)
 * times K times 4 bytes.
 * Ownership: created by clattn_weights_create, freed by clattn_weights_destroy; the context must
 * outlive it. The source view is read by the copy that create enqueues and is not kept.
 * Thread safety: read-only once created; calls on several threads may use it at once. An update
 * must not overlap in time with calls that use the object (order them with events).
 */
typedef struct clattn_weights clattn_weights;

/* Enqueues the copy of W on `queue` after the wait list; calls that use the object must run
 * after *event_out (on the same in-order queue, or waiting for it). */
CLATTN_API clattn_status clattn_weights_create(clattn_context *ctx, cl_command_queue queue,
                                               const clattn_tensor *W, cl_uint num_wait,
                                               const cl_event *wait_list, cl_event *event_out,
                                               clattn_weights **out);
/* Copies W again (a view of the same dims), e.g. new values after a training step. */
CLATTN_API clattn_status clattn_weights_update(clattn_weights *weights, cl_command_queue queue,
                                               const clattn_tensor *W, cl_uint num_wait,
                                               const cl_event *wait_list, cl_event *event_out);
/* NULL-safe; sets *weights = NULL. Work already enqueued that uses it still runs. */
CLATTN_API void clattn_weights_destroy(clattn_weights **weights);
/* Device memory the object holds, in bytes. */
CLATTN_API size_t clattn_weights_bytes(const clattn_weights *weights);

/* clattn_linear with prepared weights: Y = X·Wᵀ (+ bias). X [d0, d1, M, K], bias [1, 1, 1, N] or
 * NULL, Y [d0, d1, M, N], all CLATTN_F32. */
CLATTN_API clattn_status clattn_linear_prepared(clattn_context *ctx, cl_command_queue queue,
                                                const clattn_tensor *X,
                                                const clattn_weights *W,
                                                const clattn_tensor *bias, const clattn_tensor *Y,
                                                cl_uint num_wait, const cl_event *wait_list,
                                                cl_event *event_out);

/* Pass as `scale` to use 1/sqrt(head_dim). */
#define CLATTN_SCALE_DEFAULT NAN

/* Scores: S[b,h] = scale · Q[b,h] · K[b, h / (Hq/Hkv)]ᵀ.
 *   Q [B, Hq, Lq, D]   K [B, Hkv, Lk, D]   S [B, Hq, Lq, Lk]
 * Any NaN `scale` (e.g. CLATTN_SCALE_DEFAULT) means 1/sqrt(D). */
CLATTN_API clattn_status clattn_scores(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *Q,
                            const clattn_tensor *K, const clattn_tensor *S, float scale,
                            cl_uint num_wait, const cl_event *wait_list, cl_event *event_out);

typedef enum clattn_causal {
    CLATTN_CAUSAL_NONE = 0,
    /* Query i sees keys j <= i (PyTorch is_causal=True). */
    CLATTN_CAUSAL_TOP_LEFT = 1,
    /* Query i sees keys j <= i + Lk - Lq (the last query sees every key; decoding). With
     * key_lengths, Lk is that sequence's valid length, so a padded batch decodes correctly. */
    CLATTN_CAUSAL_BOTTOM_RIGHT = 2,
} clattn_causal;

/* What hides scores from the softmax. All parts are optional and combine. */
typedef struct clattn_mask_params {
    clattn_causal causal;
    /* Additive float mask added to the scaled scores (PyTorch's float attn_mask; -INFINITY
     * hides). Dims must each equal [B, H, Lq, Lk] or be 1 (broadcast). NULL for none. */
    const clattn_tensor *additive;
    /* int32 [B] valid key count per batch item (keys j >= len are hidden, PyTorch
     * key_padding_mask). Values are read on the device: below 0 acts as 0, above Lk as Lk.
     * NULL for none. Offset in elements. */
    cl_mem key_lengths;
    size_t key_lengths_offset;
    /* Sliding window (Mistral, Gemma 2/3, gpt-oss): key j is visible from query i only if
     *   i' - window_left <= j <= i' + window_right,
     * where i' is the query's position among the keys: i under CLATTN_CAUSAL_TOP_LEFT, and
     * i + Lk_b - Lq otherwise (Lk_b: the batch item's key length, as for the causal mask), so
     * that the newest query sits at the newest key. The window intersects the causal mask and
     * the key lengths. Each side is a key count >= 0, or CLATTN_WINDOW_UNBOUNDED (-1, the
     * default: no limit on that side); any other negative value is CLATTN_ERROR_INVALID_ARGUMENT.
     * window_left = W - 1 with causal is a window of W keys ending at the query. */
    int64_t window_left, window_right;
    /* Keys j < window_keep_first stay visible whatever window_left says (StreamingLLM's
     * "attention sink" tokens; the causal mask and key lengths still apply). 0: none. */
    size_t window_keep_first;
    /* Moves every query along the keys: the position i' above becomes i + query_offset under
     * CLATTN_CAUSAL_TOP_LEFT, and i + Lk_b - Lq + query_offset otherwise, for the causal mask,
     * the window and ALiBi alike. For a block of a longer sequence: queries at positions q0 + i
     * against keys at k0 + j see what the whole sequence's top-left mask shows them with
     * query_offset = q0 - k0 (how clattn_mpi's ring attention computes one block against
     * another). 0 (the default): as before. |query_offset| <= 2^38, or
     * CLATTN_ERROR_INVALID_ARGUMENT. */
    ptrdiff_t query_offset;
    void *reserved[3];
} clattn_mask_params;

/* A window side with no limit (clattn_mask_params.window_left / window_right). */
#define CLATTN_WINDOW_UNBOUNDED ((int64_t)-1)

CLATTN_API clattn_mask_params clattn_mask_params_default(void);

/* Mask, in place on S [B, H, Lq, Lk]: hidden scores become -INFINITY, the additive mask is added
 * to the rest. */
CLATTN_API clattn_status clattn_mask(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *S,
                          const clattn_mask_params *mask, cl_uint num_wait,
                          const cl_event *wait_list, cl_event *event_out);

/* Row-wise softmax: P[..., i, :] = exp(S[..., i, :] - max) / sum. A row whose every score is
 * -INFINITY gives all zeros (never NaN) and lse = -INFINITY. NaN or +Inf in a row make that row NaN.
 *   S, P [B, H, Lq, Lk]; P may be S itself (same buffer, offset and strides) for in place.
 *   lse  [B, H, Lq, 1] or NULL: log(sum(exp(S row))) per row. */
CLATTN_API clattn_status clattn_softmax(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *S,
                             const clattn_tensor *P, const clattn_tensor *lse, cl_uint num_wait,
                             const cl_event *wait_list, cl_event *event_out);

/* Weighted sum of values: O[b,h] = P[b,h] · V[b, h / (Hq/Hkv)].
 *   P [B, Hq, Lq, Lk]   V [B, Hkv, Lk, Dv]   O [B, Hq, Lq, Dv]
 * With Lk = 0, O is set to 0. */
CLATTN_API clattn_status clattn_weighted_sum(clattn_context *ctx, cl_command_queue queue,
                                  const clattn_tensor *P, const clattn_tensor *V,
                                  const clattn_tensor *O, cl_uint num_wait,
                                  const cl_event *wait_list, cl_event *event_out);

/* ------------------------------------------------------------------------------------------------
 * Scaled dot-product attention
 * ----------------------------------------------------------------------------------------------*/

/*
 * What shapes a row's scores beyond the mask, for today's models; all off when zero (as
 * clattn_logit_params_default() leaves them). In the order they apply:
 *   s = scale · q·k                         the scaled score
 *   s = softcap · tanh(s / softcap)         logit soft-capping (Gemma 2: 50), softcap > 0
 *   s = s + additive mask                   (clattn_mask_params)
 *   s = s − slope_h · |i' − j|              ALiBi (BLOOM, MPT), i' as for the window; under a
 *                                           causal mask every visible key has j <= i', so the
 *                                           bias is −slope_h · (i' − j)
 *   hidden keys (causal, window, key lengths) drop out
 *   o = Σ_j exp(s_j) · v_j / (Σ_j exp(s_j) + exp(sink_h))
 * An attention sink (gpt-oss) is a per-head logit that joins every row's softmax denominator and
 * brings no value. The log-sum-exp a call returns excludes the sink (it is log Σ_j exp(s_j)), as
 * do split-key partial results, which add it once, when they are merged; a row that sees no key
 * still gets 0 and −inf.
 */
typedef struct clattn_logit_params {
    float softcap; /* 0: off; otherwise > 0 and below 2.3e38 (softcap·log2(e) and 1/softcap
                    * finite) */
    /* float [H] (query heads) on the device, or NULL: ALiBi slopes, e.g. from
     * clattn_alibi_slopes. Offsets in elements. */
    cl_mem alibi_slopes;
    size_t alibi_slopes_offset;
    /* float [H] on the device, or NULL: each query head's sink logit, in the units of s. */
    cl_mem sinks;
    size_t sinks_offset;
    void *reserved[4]; /* must be zero */
} clattn_logit_params;

CLATTN_API clattn_logit_params clattn_logit_params_default(void);

/* The standard ALiBi slopes for `num_heads` heads into slopes[0 .. num_heads): for a power of
 * two n, head h (from 0) gets 2^(−8(h+1)/n); otherwise the first n' heads (n' the largest power
 * of two below num_heads) get those of n', and the rest the slopes 2^(−8k/(2n')) for k = 1, 3,
 * 5, … (as BLOOM computes them). Host memory; copy them to a buffer for clattn_logit_params.
 * CLATTN_ERROR_INVALID_ARGUMENT when slopes is NULL and num_heads > 0. */
CLATTN_API clattn_status clattn_alibi_slopes(size_t num_heads, float *slopes);

typedef enum clattn_path {
    CLATTN_PATH_AUTO = 0,    /* the fastest path that can give what was asked for */
    CLATTN_PATH_UNFUSED = 1, /* scores -> mask -> softmax -> weighted sum, S kept in memory */
    CLATTN_PATH_FUSED = 2,   /* one kernel, online softmax, no Lq x Lk buffer (no probs) */
} clattn_path;

typedef struct clattn_sdpa_params {
    float scale;             /* NaN (default) = 1/sqrt(D) */
    clattn_mask_params mask; /* causal, additive mask, key lengths */
    clattn_path path;
    /* Optional outputs: P [B, H, Lq, Lk] the attention probabilities (unfused path only), and
     * lse [B, H, Lq, 1] the log-sum-exp of each row of masked, scaled scores. NULL for none. */
    const clattn_tensor *probs;
    const clattn_tensor *lse;
    /* Optional caller-owned scratch for the score matrix (see clattn_sdpa_workspace_size). NULL:
     * the library allocates it per call (released when the queued work no longer needs it). The
     * library reads and writes it; the caller must not use those bytes until the call's event. */
    cl_mem workspace;
    size_t workspace_offset; /* bytes; must be a multiple of 4 (kernels address floats at element
                              * offsets into the buffer itself: no sub-buffer, so no other
                              * alignment applies) */
    clattn_logit_params logits; /* soft-capping, ALiBi, sinks */
    /* A packed batch of sequences of their own lengths (FlashAttention's "varlen"); NULL: a
     * batch of dims[0] items of equal length. Q, K, V, O (and lse) then hold one batch item with
     * the sequences' rows back to back: sequence b's queries are rows cu_seqlens_q[b] ..
     * cu_seqlens_q[b + 1] - 1 of Q, O and lse, its keys and values rows cu_seqlens_k[b] ..
     * cu_seqlens_k[b + 1] - 1 of K and V. Host arrays of num_seqs + 1 offsets from 0, never
     * decreasing, the last equal to Lq (Lk), read during the call only; cu_seqlens_k NULL: the
     * same as cu_seqlens_q (then Lk = Lq). Each sequence is masked on its own: either causal
     * alignment, the window, key_lengths [num_seqs] (one per sequence), ALiBi, soft-capping,
     * sinks. Fused path only: an additive mask is CLATTN_ERROR_INVALID_ARGUMENT, probabilities
     * or CLATTN_PATH_UNFUSED CLATTN_ERROR_UNSUPPORTED_PATH. */
    const size_t *cu_seqlens_q;
    const size_t *cu_seqlens_k;
    size_t num_seqs;
    void *reserved[5];
} clattn_sdpa_params;

CLATTN_API clattn_sdpa_params clattn_sdpa_params_default(void);

/* Bytes of workspace clattn_sdpa needs for these arguments (0 when none). Validates like sdpa;
 * choosing the path may build (compile) the fused kernel, as the call itself would. */
CLATTN_API clattn_status clattn_sdpa_workspace_size(clattn_context *ctx, const clattn_tensor *Q,
                                         const clattn_tensor *K, const clattn_tensor *V,
                                         const clattn_tensor *O, const clattn_sdpa_params *params,
                                         size_t *bytes);

/*
 * O = softmax(mask(scale · Q·Kᵀ)) · V per batch item and query head.
 *   Q [B, Hq, Lq, D]   K [B, Hkv, Lk, D]   V [B, Hkv, Lk, Dv]   O [B, Hq, Lq, Dv]
 * Hq must be a multiple of Hkv (GQA/MQA). A query whose keys are all hidden gets O = 0.
 * The fused path takes every D and Dv from 1 to 512 (AUTO runs larger ones unfused).
 * Q, K, V and O are all CLATTN_F32, or all CLATTN_F16 (fused path only: loaded and stored with
 * vload_half/vstore_half, computed in float; mask, probs and lse stay CLATTN_F32).
 * params may be NULL (defaults).
 */
CLATTN_API clattn_status clattn_sdpa(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *Q,
                          const clattn_tensor *K, const clattn_tensor *V, const clattn_tensor *O,
                          const clattn_sdpa_params *params, cl_uint num_wait,
                          const cl_event *wait_list, cl_event *event_out);
/* Validates the same arguments as clattn_sdpa and builds every kernel it would run (the same
 * specialisations), so that the first real call compiles nothing; enqueues nothing. */
CLATTN_API clattn_status clattn_sdpa_prepare(clattn_context *ctx, const clattn_tensor *Q,
                                             const clattn_tensor *K, const clattn_tensor *V,
                                             const clattn_tensor *O, const clattn_sdpa_params *params);


/*
 * Merges two partial attention results computed over disjoint sets of keys (each with its
 * log-sum-exp, e.g. from clattn_sdpa with params.lse) into the result over their union:
 *   lse = log(exp(lse1) + exp(lse2)),   O = O1 · exp(lse1 − lse) + O2 · exp(lse2 − lse).
 * This is what split-KV decoding and attention across several devices need. A part whose
 * lse is −inf (it saw no key) contributes nothing; if both are, O = 0 and lse = −inf.
 *   O1, O2, O [B, H, Lq, Dv]   lse1, lse2 [B, H, Lq, 1]   lse: [B, H, Lq, 1] or NULL
 * O1, O2 and O are each CLATTN_F32 or CLATTN_F16 (e.g. fp16 parts merged into a float
 * accumulator; merged in float); the lse views are CLATTN_F32.
 * O may be O1 or O2 and lse may be lse1 or lse2 (the same view: in-place accumulation); other
 * overlaps are not allowed.
 */
CLATTN_API clattn_status clattn_merge(clattn_context *ctx, cl_command_queue queue,
                                      const clattn_tensor *O1, const clattn_tensor *lse1,
                                      const clattn_tensor *O2, const clattn_tensor *lse2,
                                      const clattn_tensor *O, const clattn_tensor *lse,
                                      cl_uint num_wait, const cl_event *wait_list,
                                      cl_event *event_out);

/*
 * Adds attention sinks (clattn_logit_params) to a result computed without them, once: each row
 * of O is scaled by 1 / (1 + exp(sink_h − lse)), lse being the row's log-sum-exp without the sink
 * (as clattn_sdpa and clattn_merge return it). Attention split over keys (several devices, your
 * own split) computes its parts without sinks, merges them with clattn_merge, then calls this.
 * In place on O; lse is read only (it still excludes the sink). A row with lse = −inf (no key)
 * keeps its 0.
 *   O [B, H, Lq, Dv] CLATTN_F32 or CLATTN_F16   lse [B, H, Lq, 1]   sinks: float [H] from
 *   element sinks_offset
 */
CLATTN_API clattn_status clattn_add_sinks(clattn_context *ctx, cl_command_queue queue,
                                          const clattn_tensor *O, const clattn_tensor *lse,
                                          cl_mem sinks, size_t sinks_offset, cl_uint num_wait,
                                          const cl_event *wait_list, cl_event *event_out);

/* ------------------------------------------------------------------------------------------------
 * Rotary position embedding (RoPE)
 * ----------------------------------------------------------------------------------------------*/

typedef enum clattn_rope_layout {
    /* Rotate-half (GPT-NeoX; Llama, Mistral, Qwen in Hugging Face's layout): dim d < R/2 turns
     * with dim d + R/2, at frequency index d. */
    CLATTN_ROPE_NEOX = 0,
    /* Interleaved (GPT-J; Meta's Llama checkpoints): dim 2i turns with dim 2i + 1, at index i. */
    CLATTN_ROPE_GPTJ = 1,
} clattn_rope_layout;

/*
 * The rotation of each head vector x at position p, over its first R dims (the rest are left as
 * they are): a pair (a, b) of dims at frequency index i (its layout says which) becomes
 *   a' = a·cos(p·f_i) − b·sin(p·f_i),   b' = b·cos(p·f_i) + a·sin(p·f_i),
 * with f_i = theta^(−2i/R), or inv_freq[i] when a table is given (Llama 3.1's and YaRN's scaled
 * frequencies; YaRN's attention factor multiplies both q and k, so it goes into the attention's
 * scale as its square). Angles are taken in float as p·f_i, as PyTorch's implementations do; f_i
 * from theta is computed by the kernel with OpenCL's pow (within 16 ulp), so at positions in the
 * hundreds of thousands give inv_freq for frequencies exact to the last bit.
 */
typedef struct clattn_rope_params {
    clattn_rope_layout layout;
    size_t rotary_dim;   /* R: even, at most the head dim; 0 = the whole head dim (then even) */
    float theta;         /* the base (default 10000); finite and > 0 unless inv_freq is given */
    cl_mem inv_freq;     /* float [R/2] on the device, or NULL: frequencies from theta */
    size_t inv_freq_offset;
    /* int32 [B] on the device, or NULL: token t of sequence b is at position positions[b] + t
     * (a chunk that continues a sequence, attention over a slice of a longer one); NULL: t. */
    cl_mem positions;
    size_t positions_offset;
    void *reserved[8];   /* must be zero */
} clattn_rope_params;

CLATTN_API clattn_rope_params clattn_rope_params_default(void);

/*
 * Y = RoPE(X) per head vector: X, Y [B, H, T, D], both CLATTN_F32 or both CLATTN_F16 (rotated in
 * float). Y may be X itself (the same view) for in place; other overlaps are not allowed.
 * params may be NULL (defaults).
 */
CLATTN_API clattn_status clattn_rope(clattn_context *ctx, cl_command_queue queue,
                                     const clattn_tensor *X, const clattn_tensor *Y,
                                     const clattn_rope_params *params, cl_uint num_wait,
                                     const cl_event *wait_list, cl_event *event_out);

/* ------------------------------------------------------------------------------------------------
 * Multi-head attention block
 * ----------------------------------------------------------------------------------------------*/

/*
 * Describes a multi-head attention layer with PyTorch nn.MultiheadAttention's weights, so a state
 * dict loads unchanged. Weights are [out_features, in_features] (Y = X·Wᵀ + b), each given as a
 * view [1, 1, rows, cols] (bias: [1, 1, 1, n]) into the caller's buffers. With head_dim
 * D = embed_dim / num_heads and KV = num_kv_heads · D (= embed_dim without GQA):
 *   packed:   in_proj_weight [E + 2·KV, E]  (rows: W_Q, then W_K, then W_V; [3E, E] without GQA)
 *   separate: q_proj_weight [E, E], k_proj_weight [KV, kdim], v_proj_weight [KV, vdim]
 *             (needed when kdim or vdim differ from E, as in PyTorch)
 *   biases, when `bias` is set: in_proj_bias [E + 2·KV] (PyTorch's packed form, with either kind
 *             of weights), or q_proj_bias [E], k_proj_bias [KV], v_proj_bias [KV] (checkpoints
 *             that keep them apart, e.g. BERT's); and out_proj_bias [E]
 *   out_proj_weight [E, E] (the "value-up" projection)
 */
typedef struct clattn_mha_params {
    size_t embed_dim;    /* E */
    size_t num_heads;    /* H; must divide E */
    size_t num_kv_heads; /* 0 = num_heads; must divide num_heads (GQA/MQA) */
    size_t kdim, vdim;   /* widths of key and value inputs; 0 = E */
    int bias;            /* nonzero: the biases are given */
    clattn_dtype dtype;  /* of the inputs and the output: CLATTN_F32, or CLATTN_F16 (converted to
                          * float in the forward's scratch; products and attention run in float;
                          * the output is rounded back to fp16) */
    const clattn_tensor *in_proj_weight;
    const clattn_tensor *q_proj_weight, *k_proj_weight, *v_proj_weight;
    const clattn_tensor *in_proj_bias;
    const clattn_tensor *out_proj_weight;
    const clattn_tensor *out_proj_bias;
    const clattn_tensor *q_proj_bias, *k_proj_bias, *v_proj_bias;
    clattn_dtype weight_dtype; /* of the weights and biases: 0 = dtype; CLATTN_F16 weights with
                                * CLATTN_F32 inputs and outputs are fine (converted once, at
                                * create) */
    void *reserved[4]; /* must be zero */
} clattn_mha_params;

CLATTN_API clattn_mha_params clattn_mha_params_default(void);

/*
 * A multi-head attention layer: its weights prepared once, at create, in the layout the context's
 * matrix-product engine reads fastest (as clattn_weights does), in fp32 whatever their dtype, with
 * the biases; forwards never read or convert the caller's weight buffers.
 * Device memory: clattn_mha_bytes(), about 4 bytes per weight and bias (the number of output
 * features rounded up to the engine's panel width, 64 on AVX-512 CPUs).
 * Ownership: clattn_mha_create reads the weights through a queue of the context's own and waits
 * for the copy, so their values must be in place when it is called (no write to them still
 * pending on a queue). It retains their buffers for clattn_mha_update_weights, and releases them at
 * destroy. The context must outlive the layer.
 * Thread safety: forward may run from several threads at once (those without a workspace take
 * the layer's lock while they plan and enqueue). clattn_mha_update_weights must not overlap in
 * time with a forward (order them with events).
 */
typedef struct clattn_mha clattn_mha;

CLATTN_API clattn_status clattn_mha_create(clattn_context *ctx, const clattn_mha_params *params,
                                           clattn_mha **out);
/* NULL-safe; sets *mha = NULL. Forwards already enqueued still run. */
CLATTN_API void clattn_mha_destroy(clattn_mha **mha);
/* Copies the weights and biases again from the views given at create (new values, e.g. after
 * a training step), enqueued on `queue` after the wait list. */
CLATTN_API clattn_status clattn_mha_update_weights(clattn_mha *mha, cl_command_queue queue,
                                                   cl_uint num_wait, const cl_event *wait_list,
                                                   cl_event *event_out);
/* Device memory the layer holds, in bytes: its prepared weights and biases, and the scratch kept
 * from its last forward without a workspace. */
CLATTN_API size_t clattn_mha_bytes(const clattn_mha *mha);

typedef struct clattn_mha_forward_params {
    /* causal, additive mask [B|1, H|1, Lq, Lk], key lengths (PyTorch key_padding_mask) */
    clattn_mask_params mask;
    clattn_path path;
    /* Optional attention weights out (need_weights): averaged over heads [B, 1, Lq, Lk] and/or
     * per head [B, H, Lq, Lk]. NULL for none. */
    const clattn_tensor *weights;
    const clattn_tensor *head_weights;
    /* Optional caller-owned scratch for the forward's intermediates (projections, attention
     * output, scores when the unfused path runs): clattn_mha_workspace_size bytes from
     * workspace_offset (a multiple of 4). The caller must not touch those bytes until the event.
     * NULL: the layer's own scratch, kept from one forward to the next (allocated when a forward
     * needs other sizes than the last, counted in clattn_mha_bytes, released at destroy); a
     * forward that reuses it waits on the device for the one that used it before, on whatever
     * queue. */
    cl_mem workspace;
    size_t workspace_offset;
    clattn_logit_params logits; /* soft-capping, ALiBi slopes and sinks per head */
    /* A packed batch (see clattn_sdpa_params): query [1, 1, total_q, E], key and value
     * [1, 1, total_k, .], output [1, 1, total_q, E], the sequences' tokens back to back; the
     * projections run over all the tokens at once, the attention per sequence. No attention
     * weights (fused path). */
    const size_t *cu_seqlens_q;
    const size_t *cu_seqlens_k;
    size_t num_seqs;
    void *reserved[5]; /* must be zero */
} clattn_mha_forward_params;

CLATTN_API clattn_mha_forward_params clattn_mha_forward_params_default(void);

/*
 * output = out_proj(attention(query·W_Qᵀ + b_Q, key·W_Kᵀ + b_K, value·W_Vᵀ + b_V))
 *   query [B, 1, Lq, E]   key [B, 1, Lk, kdim]   value [B, 1, Lk, vdim]   output [B, 1, Lq, E]
 * Self attention: pass the same view as query, key and value (an fp16 input is then converted
 * once). Cross attention: keys and values from another sequence. params may be NULL. The
 * projections write layouts the attention reads without a copy ([B, H, T, D] on clattn's own
 * GEMM engine, [B, T, H·D] on CLBlast).
 */
CLATTN_API clattn_status clattn_mha_forward(clattn_mha *mha, cl_command_queue queue,
                                            const clattn_tensor *query, const clattn_tensor *key,
                                            const clattn_tensor *value,
                                            const clattn_tensor *output,
                                            const clattn_mha_forward_params *params,
                                            cl_uint num_wait, const cl_event *wait_list,
                                            cl_event *event_out);

/* Validates the same arguments as clattn_mha_forward and builds every kernel it would run;
 * enqueues nothing. */
CLATTN_API clattn_status clattn_mha_prepare(clattn_mha *mha, const clattn_tensor *query,
                                            const clattn_tensor *key, const clattn_tensor *value,
                                            const clattn_tensor *output,
                                            const clattn_mha_forward_params *params);

/* Device memory (bytes) one forward with these arguments needs for its intermediates: what it
 * allocates, or what a caller's workspace must hold. Validates like the forward; choosing the
 * attention path may build the fused kernel. params->workspace is ignored. */
CLATTN_API clattn_status clattn_mha_workspace_size(clattn_mha *mha, const clattn_tensor *query,
                                                   const clattn_tensor *key,
                                                   const clattn_tensor *value,
                                                   const clattn_mha_forward_params *params,
                                                   size_t *bytes);

/* ------------------------------------------------------------------------------------------------
 * KV cache for decoding
 * ----------------------------------------------------------------------------------------------*/

typedef struct clattn_kv_cache_params {
    size_t batch;        /* B sequences */
    size_t num_kv_heads; /* Hkv */
    size_t head_dim;     /* D, of keys and values alike: 1 to 512 (the fused attention's range;
                          * CLATTN_ERROR_UNSUPPORTED_PATH beyond it) */
    size_t capacity;     /* tokens each sequence can hold */
    clattn_dtype dtype;  /* storage: CLATTN_F32, CLATTN_F16, CLATTN_BF16 or CLATTN_Q8 (int8
                          * rows with a scale each: D + 4 bytes a row, D rounded up to 4;
                          * computed in float whatever it is) */
    /* RoPE applied by the cache (NULL: none; copied at create): appends rotate the new keys at
     * their positions, attention rotates the queries at theirs, so decoding needs no pass of its
     * own. A token's position is its index in the cache (positions must be NULL); the queries of
     * attention are its Lq newest tokens. The context must outlive the cache; inv_freq's buffer
     * is retained. */
    const clattn_rope_params *rope;
    /* Paged storage (page_size > 0): the B sequences share a pool of num_pages pages of
     * page_size tokens each, taken as sequences grow and given back by
     * clattn_kv_cache_release; `capacity` is then the most tokens one sequence may hold (its
     * block table's length, capacity / page_size rounded up). 0 (default): every sequence owns
     * `capacity` tokens of contiguous storage. CLATTN_ERROR_INVALID_SHAPE: num_pages without a
     * page_size, a page_size without num_pages, either above 2^31 - 1, or a head's rows of a page
     * above 2^31 - 1 bytes. The host keeps a table of B x ceil(capacity / page_size) ints. */
    size_t page_size;
    size_t num_pages;
    void *reserved[6];   /* must be zero */
} clattn_kv_cache_params;

CLATTN_API clattn_kv_cache_params clattn_kv_cache_params_default(void);

/*
 * Keys and values of B sequences x Hkv heads, up to `capacity` tokens each, in device memory the
 * cache owns, with every sequence's length kept on the host (for capacity checks) and given to
 * the attention on the device (a contiguous cache keeps a copy there; a paged one uploads its
 * lengths with its tables at every call).
 *   Contiguous (page_size 0): [B, Hkv, capacity, D] each for K and V.
 *   Paged: a pool of num_pages pages of page_size tokens per kv head ([Hkv, num_pages,
 *   page_size, D] each, a head's pages side by side), and per sequence a block table (its
 *   pages in token order) that the cache alone writes: the tables live on the host, every entry
 *   is checked against the pool there, and each call uploads the tables it reads with its own
 *   work (a copy made before it enqueues anything), so queued work never sees a later change.
 *   Sequences may share pages (clattn_kv_cache_fork; pages are reference-counted); an append
 *   into a shared, partly filled last page first copies it (copy on write). An append that needs
 *   more free pages than the pool has is CLATTN_ERROR_POOL_EXHAUSTED and changes nothing.
 * Ownership: created by clattn_kv_cache_create, freed by clattn_kv_cache_destroy; the context
 * must outlive it. Thread safety: calls that change the cache (append, attend, release, fork,
 * prepare, destroy) must not overlap in time with any other call on it; the calls that only
 * read it (clattn_kv_cache_length, clattn_kv_cache_free_pages,
 * clattn_kv_cache_workspace_size) may run from several threads at once while nothing changes it. Different caches are independent. Work is enqueued in call order:
 * use one in-order queue per cache, or chain the events.
 */
typedef struct clattn_kv_cache clattn_kv_cache;

CLATTN_API clattn_status clattn_kv_cache_create(clattn_context *ctx,
                                                const clattn_kv_cache_params *params,
                                                clattn_kv_cache **out);
CLATTN_API void clattn_kv_cache_destroy(clattn_kv_cache **cache);

/* Tokens sequence b holds (0 when b is out of range). */
CLATTN_API size_t clattn_kv_cache_length(const clattn_kv_cache *cache, size_t b);

/* Pages of a paged cache's pool that no sequence holds (0 for a contiguous cache or NULL). */
CLATTN_API size_t clattn_kv_cache_free_pages(const clattn_kv_cache *cache);

/* Paged caches only (CLATTN_ERROR_UNSUPPORTED_PATH otherwise); host bookkeeping, nothing is
 * enqueued, so they take no queue and no events: work already queued keeps the tables it was
 * given, but a page given back may be written by the next append. On one in-order queue that is
 * all in order; with several queues, wait for the queued work that reads or writes a released
 * sequence's pages (its attention, its appends, a copy on write from them) before appending on
 * another queue.
 * release: sequence b forgets its tokens (length 0); its pages that no other sequence shares go
 * back to the pool. fork: sequence dst (empty: length 0, else CLATTN_ERROR_INVALID_ARGUMENT)
 * becomes a copy of src sharing all of src's pages (a shared prompt prefix, beam search); the
 * first append to either into a partly filled shared page copies that page. src == dst, or an
 * index out of range, is CLATTN_ERROR_INVALID_ARGUMENT; a failed call changes nothing. */
CLATTN_API clattn_status clattn_kv_cache_release(clattn_kv_cache *cache, size_t b);
CLATTN_API clattn_status clattn_kv_cache_fork(clattn_kv_cache *cache, size_t src, size_t dst);

/*
 * Appends new tokens' keys and values, e.g. straight from a projection's output (no host round
 * trip): K_new, V_new [B, Hkv, T, D] of the cache's dtype (a CLATTN_BF16 cache also takes
 * CLATTN_F32, rounded to nearest even; a CLATTN_Q8 cache takes CLATTN_F32, CLATTN_F16 or
 * CLATTN_BF16 and quantizes each row; K_new and V_new of one dtype); sequence b gains counts[b] <= T tokens
 * (counts NULL: T each), taken from the first counts[b] positions. Appending past the capacity
 * is CLATTN_ERROR_CACHE_FULL, past a paged cache's free pages CLATTN_ERROR_POOL_EXHAUSTED, both
 * checked before anything is enqueued: the cache is unchanged.
 */
CLATTN_API clattn_status clattn_kv_cache_append(clattn_kv_cache *cache, cl_command_queue queue,
                                                const clattn_tensor *K_new,
                                                const clattn_tensor *V_new, const size_t *counts,
                                                cl_uint num_wait, const cl_event *wait_list,
                                                cl_event *event_out);

typedef struct clattn_kv_attend_params {
    float scale;               /* NaN (default) = 1/sqrt(D) */
    /* Split the keys over this many work-groups per query block and merge the partial results
     * by log-sum-exp (flash-decoding): 0 picks from the device and the cache length, 1 is off. */
    size_t splits;
    const clattn_tensor *lse;  /* optional [B, Hq, Lq, 1] CLATTN_F32 */
    /* Optional caller-owned scratch for the split partial results: clattn_kv_cache_workspace_size
     * bytes from workspace_offset (a multiple of 4). NULL: the cache's own scratch, kept between
     * calls and grown when a longer cache needs more splits. */
    cl_mem workspace;
    size_t workspace_offset;
    /* A sliding window over the cache (see clattn_mask_params; the queries sit at the newest
     * keys, so only the left side matters): CLATTN_WINDOW_UNBOUNDED (default) or a key count. */
    int64_t window_left;
    size_t window_keep_first;
    clattn_logit_params logits; /* soft-capping, ALiBi, sinks (added after the split merge) */
    /* Nonzero: no causal mask, every query sees every key its sequence holds (cross attention
     * over K/V appended once, e.g. an encoder's, at every decoder step: Whisper, T5). The
     * queries still sit at the newest keys for a window and ALiBi. 0: bottom-right causal. */
    int cross;
    /* Steps of their own per sequence in one launch (continuous batching: some sequences
     * prefilling a chunk while others decode a token): NULL, every sequence has Lq queries;
     * otherwise Q and O (and lse) hold one batch item with the sequences' queries back to back,
     * sequence b's (its cu_seqlens_q[b + 1] - cu_seqlens_q[b] newest tokens) at rows
     * cu_seqlens_q[b] .. cu_seqlens_q[b + 1] - 1. A host array of num_seqs + 1 offsets from 0,
     * never decreasing, ending at Lq; num_seqs is the cache's batch. Read during the call. */
    const size_t *cu_seqlens_q;
    size_t num_seqs;
    void *reserved[6];         /* must be zero */
} clattn_kv_attend_params;

CLATTN_API clattn_kv_attend_params clattn_kv_attend_params_default(void);

/*
 * Attention of the Lq newest tokens' queries over everything each sequence holds, bottom-right
 * causal (query i of sequence b sees keys j <= i + length_b - Lq): decoding (Lq = 1) or a chunk
 * of a prompt whose K/V were just appended; with params->cross, without the causal mask.
 *   Q [B, Hq, Lq, D]   O [B, Hq, Lq, D], both CLATTN_F32; Hq a multiple of the cache's Hkv.
 */
CLATTN_API clattn_status clattn_kv_cache_attend(clattn_kv_cache *cache, cl_command_queue queue,
                                                const clattn_tensor *Q, const clattn_tensor *O,
                                                const clattn_kv_attend_params *params,
                                                cl_uint num_wait, const cl_event *wait_list,
                                                cl_event *event_out);

/* Bytes of workspace clattn_kv_cache_attend needs with these arguments at the cache's present
 * lengths (0 without split keys). The split count grows with the cache: query again, or give
 * params->splits. Validates like the call. */
CLATTN_API clattn_status clattn_kv_cache_workspace_size(clattn_kv_cache *cache,
                                                        const clattn_tensor *Q,
                                                        const clattn_tensor *O,
                                                        const clattn_kv_attend_params *params,
                                                        size_t *bytes);

/* Builds everything appends and attention with these arguments will run (both the single-pass
 * and the split-key kernels, whatever the cache's length); enqueues nothing. */
CLATTN_API clattn_status clattn_kv_cache_prepare(clattn_kv_cache *cache, const clattn_tensor *Q,
                                                 const clattn_tensor *O,
                                                 const clattn_kv_attend_params *params);

#ifdef __cplusplus
}
#endif
#endif /* CLATTN_H */
