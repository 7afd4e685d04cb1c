/* clattn inside someone else's OpenCL pipeline: this program owns its context, two queues and
 * its buffers. Its own kernel makes Q, K and V on queue A; clattn runs attention on queue B as
 * soon as that is done; its own kernel then reduces the output on queue A; everything is chained
 * by events, with no clFinish in between. At the end it checks the reduction against a plain C
 * computation of the same attention.
 *
 * Build: cc -std=c11 pipeline.c $(pkg-config --cflags --libs clattn) -lm */
#define CL_TARGET_OPENCL_VERSION 120
#include <clattn.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { B = 2, H = 4, T = 48, D = 32 };

static const char *program_source =
    "__kernel void make_qkv(__global float *q, __global float *k, __global float *v) {\n"
    "  size_t i = get_global_id(0);\n"
    "  q[i] = sin(0.37f * (float)i);\n"
    "  k[i] = cos(0.11f * (float)i + 1.0f);\n"
    "  v[i] = sin(0.05f * (float)i) * 2.0f;\n"
    "}\n"
    "__kernel void row_sums(__global const float *o, __global float *sums, int d) {\n"
    "  size_t r = get_global_id(0);\n"
    "  float s = 0.0f;\n"
    "  for (int j = 0; j < d; j++) s += o[r * d + j];\n"
    "  sums[r] = s;\n"
    "}\n";

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        cl_int e_ = (x);                                                                           \
        if (e_ != CL_SUCCESS) {                                                                    \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, clattn_status_name(e_));    \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

int main(void)
{
    cl_int err;
    cl_platform_id plat;
    cl_device_id dev;
    CHECK(clGetPlatformIDs(1, &plat, NULL));
    CHECK(clGetDeviceIDs(plat, CL_DEVICE_TYPE_ALL, 1, &dev, NULL));
    cl_context ctx = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
    CHECK(err);
    cl_command_queue qa = clCreateCommandQueue(ctx, dev, 0, &err);
    CHECK(err);
    cl_command_queue qb = clCreateCommandQueue(ctx, dev, 0, &err);
    CHECK(err);
    cl_program prog = clCreateProgramWithSource(ctx, 1, &program_source, NULL, &err);
    CHECK(err);
    CHECK(clBuildProgram(prog, 1, &dev, "", NULL, NULL));
    cl_kernel make = clCreateKernel(prog, "make_qkv", &err);
    CHECK(err);
    cl_kernel reduce = clCreateKernel(prog, "row_sums", &err);
    CHECK(err);

    const size_t n = (size_t)B * H * T * D, rows = (size_t)B * H * T;
    cl_mem q = clCreateBuffer(ctx, CL_MEM_READ_WRITE, n * 4, NULL, &err);
    cl_mem k = clCreateBuffer(ctx, CL_MEM_READ_WRITE, n * 4, NULL, &err);
    cl_mem v = clCreateBuffer(ctx, CL_MEM_READ_WRITE, n * 4, NULL, &err);
    cl_mem o = clCreateBuffer(ctx, CL_MEM_READ_WRITE, n * 4, NULL, &err);
    cl_mem sums = clCreateBuffer(ctx, CL_MEM_READ_WRITE, rows * 4, NULL, &err);
    CHECK(err);

    /* clattn on the program's own context. */
    clattn_context_params cp = clattn_context_params_default();
    cp.context = ctx;
    cp.device = dev;
    clattn_context *cc;
    CHECK(clattn_context_create(&cp, &cc));

    /* Queue A: make Q, K, V. */
    cl_event made, attended, reduced;
    CHECK(clSetKernelArg(make, 0, sizeof q, &q));
    CHECK(clSetKernelArg(make, 1, sizeof k, &k));
    CHECK(clSetKernelArg(make, 2, sizeof v, &v));
    CHECK(clEnqueueNDRangeKernel(qa, make, 1, NULL, &n, NULL, 0, NULL, &made));
    /* Queue B: attention, waiting for queue A's event. */
    clattn_tensor Q = clattn_tensor_bhtd(q, 0, B, H, T, D), K = clattn_tensor_bhtd(k, 0, B, H, T, D),
                  V = clattn_tensor_bhtd(v, 0, B, H, T, D), O = clattn_tensor_bhtd(o, 0, B, H, T, D);
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.mask.causal = CLATTN_CAUSAL_TOP_LEFT;
    CHECK(clattn_sdpa(cc, qb, &Q, &K, &V, &O, &p, 1, &made, &attended));
    /* Queue A again: the program's own consumer, waiting for clattn's event. */
    const int d = D;
    CHECK(clSetKernelArg(reduce, 0, sizeof o, &o));
    CHECK(clSetKernelArg(reduce, 1, sizeof sums, &sums));
    CHECK(clSetKernelArg(reduce, 2, sizeof d, &d));
    CHECK(clEnqueueNDRangeKernel(qa, reduce, 1, NULL, &rows, NULL, 1, &attended, &reduced));
    CHECK(clFlush(qb));
    float *got = malloc(rows * 4);
    CHECK(clEnqueueReadBuffer(qa, sums, CL_TRUE, 0, rows * 4, got, 1, &reduced, NULL));

    /* The same numbers in plain C. */
    double worst = 0;
    for (size_t bh = 0; bh < (size_t)B * H; bh++)
        for (size_t i = 0; i < T; i++) {
            double s[T], mx = -INFINITY, sum = 0, rowsum = 0;
            for (size_t j = 0; j <= i; j++) {
                double dot = 0;
                for (size_t x = 0; x < D; x++) {
                    size_t qi = (bh * T + i) * D + x, kj = (bh * T + j) * D + x;
                    dot += sin(0.37f * (float)qi) * cos(0.11f * (float)kj + 1.0f);
                }
                s[j] = dot / sqrt((double)D);
                mx = fmax(mx, s[j]);
            }
            for (size_t j = 0; j <= i; j++)
                sum += exp(s[j] - mx);
            for (size_t j = 0; j <= i; j++)
                for (size_t x = 0; x < D; x++)
                    rowsum += exp(s[j] - mx) / sum * sin(0.05f * (float)((bh * T + j) * D + x)) * 2.0;
            worst = fmax(worst, fabs(rowsum - got[bh * T + i]));
        }
    printf("pipeline: %zu row sums, max error %.2g against plain C\n", rows, worst);

    free(got);
    clReleaseEvent(made), clReleaseEvent(attended), clReleaseEvent(reduced);
    clattn_context_destroy(&cc);
    clReleaseMemObject(q), clReleaseMemObject(k), clReleaseMemObject(v), clReleaseMemObject(o);
    clReleaseMemObject(sums);
    clReleaseKernel(make), clReleaseKernel(reduce), clReleaseProgram(prog);
    clReleaseCommandQueue(qa), clReleaseCommandQueue(qb), clReleaseContext(ctx);
    return worst < 1e-3 ? 0 : 1;
}
