/* Helpers shared by clattn-info, clattn-bench and clattn-tune. */
#define _POSIX_C_SOURCE 200809L
#include "tool_common.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

double tool_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double tool_median(double *t, size_t n)
{
    qsort(t, n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

float *tool_random_floats(size_t n, unsigned seed, float scale)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    if (!x)
        return NULL;
    /* xorshift64: fast, and the same sequence everywhere. */
    unsigned long long s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        x[i] = scale * ((float)(s >> 40) / 8388608.0f - 1.0f);
    }
    return x;
}

double *tool_to_double(const float *x, size_t n)
{
    double *d = malloc((n ? n : 1) * sizeof *d);
    if (!d)
        return NULL;
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

double tool_max_abs_diff(const float *got, const double *ref, size_t n)
{
    double e = 0;
    for (size_t i = 0; i < n; i++)
        e = fmax(e, isnan(got[i]) ? INFINITY : fabs(got[i] - ref[i]));
    return e;
}
