/* Test harness: an OpenCL environment on the default device, buffers, random data, strided
 * host<->view copies, comparisons with the reference, and named cases run one per process. */
#ifndef CLATTN_TEST_HARNESS_H
#define CLATTN_TEST_HARNESS_H
#include "clattn.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct test_env {
    cl_context context;
    cl_device_id device;
    cl_command_queue queue;
    clattn_context *cc;
} test_env;

/* The caller's-context path: the test creates its own context and queue on the device clattn
 * would pick, and a clattn context over them. out_of_order selects the queue kind. */
void env_open(test_env *e, bool out_of_order);
/* The default path: clattn creates the context; the test makes a queue on it. */
void env_open_default(test_env *e);
void env_close(test_env *e);

/* Fails the process (these are tests) on any OpenCL error. */
#define CL_OK(call)                                                                                \
    do {                                                                                           \
        cl_int err_ = (call);                                                                      \
        if (err_ != CL_SUCCESS) {                                                                  \
            fprintf(stderr, "%s:%d: %s -> %d (%s)\n", __FILE__, __LINE__, #call, err_,             \
                    clattn_status_name(err_));                                                     \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

/* A kernel directory of a test's own (CLATTN_KERNEL_DIR), for builds that must fail or kernels
 * that must not match the host: a new temporary directory (its path written to dir, at least 32
 * bytes), files written or copied from the library's kernels/ ($CLATTN_TEST_KERNELS) into it,
 * and a clattn context over e's OpenCL context that reads its kernels there (no disk cache). */
void kernel_dir_new(char *dir);
void kernel_dir_write(const char *dir, const char *file, const char *text);
void kernel_dir_copy(const char *dir, const char *kernel); /* kernel name, without ".cl" */
clattn_context *kernel_dir_context(test_env *e, const char *dir, clattn_log_fn log, void *log_user);
/* Removes the directory and the files written into it. */
void kernel_dir_remove(const char *dir);

/* Reference counts, for the tests that prove the library lets go of what it retained. */
cl_uint ctx_refs(cl_context c);
cl_uint mem_refs(cl_mem m);

cl_mem buf_new(test_env *e, size_t bytes);
void buf_write(test_env *e, cl_mem b, size_t off_bytes, const void *src, size_t bytes);
void buf_read(test_env *e, cl_mem b, size_t off_bytes, void *dst, size_t bytes);

/* IEEE binary16 <-> float on the host, rounding to nearest even (the tests' own conversion,
 * independent of the device's vstore_half). */
uint16_t half_from_float(float f);
float half_to_float(uint16_t h);
/* bfloat16 of x, rounded to nearest even, as a float (the tests' own conversion). */
float bf16_round(float x);

/* A new buffer holding n doubles as floats (slopes, sinks and other small vectors). */
cl_mem buf_floats(test_env *e, const double *x, size_t n);

/* Deterministic uniform floats in [lo, hi). */
void fill_uniform(float *x, size_t n, uint64_t *seed, float lo, float hi);

/* A host mirror of a device buffer that holds one tensor view, with guard space around it.
 * `host` holds the whole buffer; the view addresses it like the device does. */
typedef struct view_buf {
    clattn_tensor t;
    float *host;
    size_t elems; /* of the whole buffer */
} view_buf;

/* Layouts for test views. */
typedef enum layout { LAYOUT_BHTD = 0, LAYOUT_BTHD = 1 } layout;

/* A view of dims [B, H, T, D] in the given layout, starting `offset` elements into a buffer with
 * `pad` spare elements after it; the whole buffer is filled with random data (inputs) or a
 * sentinel pattern (outputs) and uploaded. */
view_buf vb_new(test_env *e, layout l, size_t B, size_t H, size_t T, size_t D, size_t offset,
                size_t pad, uint64_t *seed, bool random);
void vb_free(view_buf *v);
/* Reads the whole device buffer back into `out` (elems floats). */
void vb_read_all(test_env *e, const view_buf *v, float *out);
/* Dense [d0,d1,d2,d3] doubles of the view's elements, from a host copy of the buffer. */
double *vb_dense(const view_buf *v, const float *all);
/* Whether the device buffer still holds exactly v->host (an input the call must not write). */
bool vb_same(test_env *e, const view_buf *v);
/* Checks that every element of `all` outside the view equals `before` (guards untouched). */
bool vb_outside_unchanged(const view_buf *v, const float *before, const float *all);

/* max |got - ref| <= tol * max(1, max |ref|); prints the error. NaN in got where ref is finite
 * (or the reverse) fails. Infinite refs must match exactly. */
bool check_close(const char *what, const double *got, const double *ref, size_t n, double tol);

#define TOL 1e-4

/* Named cases, each run under the setups it lists. A test file's table is the one source of
 * truth: tests/meson.build reads the lines "CASE(name)" (run under the file's
 * `#define SETUPS "..."`, or once with no setup when that is "") and "CASE_IN(name, "...")" and
 * registers one meson test per case and setup.
 *
 * A setup is "<path>" followed by "-<word>"s: path auto, unfused or fused (test_path()); words
 * cpu or gpu (the fused kernel's layout) and clblast or clattn (the matrix-product engine),
 * forced through every test context's params. */
typedef struct test_case {
    const char *name;
    bool (*fn)(void);
    const char *setups;
} test_case;
#define CASE(fn) {#fn, fn, SETUPS}
#define CASE_IN(fn, setups) {#fn, fn, setups}
/* main: runs the case named in argv[1] under the setup in argv[2] (any setup: Oclgrind's sample
 * adds fused-cpu), or with "all" every case whose row lists that setup. */
int run_cases(int argc, char **argv, const test_case *cases, size_t n);
/* The path the setup names (CLATTN_PATH_AUTO without one). */
clattn_path test_path(void);
/* The kernel overrides the setup gives every test context. */
clattn_kernel_config test_kernel_config(void);

#define EXPECT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond);                   \
            ok = false;                                                                            \
        }                                                                                          \
    } while (0)

#define EXPECT_STATUS(call, want)                                                                  \
    do {                                                                                           \
        clattn_status got_ = (call);                                                               \
        if (got_ != (want)) {                                                                      \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s\n", __FILE__, __LINE__, #call,     \
                    clattn_status_name(got_), clattn_status_name(want));                           \
            ok = false;                                                                            \
        }                                                                                          \
    } while (0)

#endif
