/* What the command-line tools share: a clock, medians, reproducible random inputs and the
 * comparison with the double-precision reference. Not part of the library. */
#ifndef CLATTN_TOOL_COMMON_H
#define CLATTN_TOOL_COMMON_H

#include <stddef.h>

/* Seconds on a monotonic clock. */
double tool_now(void);

/* Median of n > 0 values; sorts them in place. */
double tool_median(double *t, size_t n);

/* n floats uniform in [-scale, scale), the same for the same seed on every machine (malloc'd). */
float *tool_random_floats(size_t n, unsigned seed, float scale);

/* A double copy of n floats (malloc'd). */
double *tool_to_double(const float *x, size_t n);

/* max |got - ref| over n values; infinite when got holds a NaN. */
double tool_max_abs_diff(const float *got, const double *ref, size_t n);

#endif
