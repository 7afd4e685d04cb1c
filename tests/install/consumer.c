/* A program built against the installed library with `pkg-config --cflags --libs clattn` only:
 * it runs one small causal attention and checks one output row by hand. */
#include <clattn.h>

#include <math.h>
#include <stdio.h>

int main(void)
{
    clattn_context *cc = NULL;
    clattn_status st = clattn_context_create(NULL, &cc);
    if (st != CLATTN_SUCCESS) {
        printf("clattn_context_create: %s\n", clattn_status_name(st));
        return 1;
    }
    cl_context c = clattn_context_cl_context(cc);
    cl_int err;
    cl_command_queue q = clCreateCommandQueue(c, clattn_context_cl_device(cc), 0, &err);
    /* Two tokens, head dim 2: query 1 sees keys 0 and 1. */
    float qkv[12] = {1, 0, 0, 1, /* Q */ 1, 0, 0, 1, /* K */ 2, 4, 6, 8 /* V */};
    cl_mem in = clCreateBuffer(c, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof qkv, qkv, &err);
    cl_mem out = clCreateBuffer(c, CL_MEM_READ_WRITE, 4 * sizeof(float), NULL, &err);
    clattn_tensor Q = clattn_tensor_bhtd(in, 0, 1, 1, 2, 2), K = clattn_tensor_bhtd(in, 4, 1, 1, 2, 2),
                  V = clattn_tensor_bhtd(in, 8, 1, 1, 2, 2), O = clattn_tensor_bhtd(out, 0, 1, 1, 2, 2);
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.mask.causal = CLATTN_CAUSAL_TOP_LEFT;
    st = clattn_sdpa(cc, q, &Q, &K, &V, &O, &p, 0, NULL, NULL);
    float o[4] = {0};
    if (st == CLATTN_SUCCESS)
        clEnqueueReadBuffer(q, out, CL_TRUE, 0, sizeof o, o, 0, NULL, NULL);
    /* Row 0 sees only key 0: V[0]. Row 1: scores 0 and 1/sqrt(2), weights by softmax. */
    double w1 = 1.0 / (1.0 + exp(-1.0 / sqrt(2.0)));
    double want[4] = {2, 4, (1 - w1) * 2 + w1 * 6, (1 - w1) * 4 + w1 * 8};
    /* The library loaded is the one this header describes (its SONAME's ABI number). */
    int ok = st == CLATTN_SUCCESS && clattn_abi_version() == CLATTN_ABI_VERSION;
    for (int i = 0; i < 4; i++)
        ok &= fabs(o[i] - want[i]) < 1e-5;
    printf("clattn %s: %s (%g %g %g %g)\n", clattn_version(), ok ? "ok" : "WRONG", o[0], o[1], o[2], o[3]);
    clReleaseMemObject(in);
    clReleaseMemObject(out);
    clReleaseCommandQueue(q);
    clattn_context_destroy(&cc);
    return ok ? 0 : 1;
}
