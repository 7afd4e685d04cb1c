/* The kernel sources embedded at build time (kernels/embed.py writes the table). */
#ifndef CLATTN_KERNEL_SOURCES_H
#define CLATTN_KERNEL_SOURCES_H
#include <stddef.h>
#include <stdint.h>

typedef struct clattn_kernel_source {
    const char *name;   /* file name without ".cl" */
    const char *source; /* NUL-terminated OpenCL C */
    size_t length;      /* bytes, without the NUL */
    uint64_t hash;      /* first 8 bytes of the source's SHA-256 */
    const char *kernels; /* the kernel functions it defines, space-separated */
} clattn_kernel_source;

/* prelude.cl: joined in front of every kernel file (program.c); not a kernel file itself. */
extern const clattn_kernel_source clattn__kernel_prelude;
extern const clattn_kernel_source clattn__kernel_sources[];
extern const size_t clattn__kernel_source_count;

#endif
