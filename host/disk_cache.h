/* The on-disk cache of compiled program binaries (part of the program module). */
#ifndef CLATTN_DISK_CACHE_H
#define CLATTN_DISK_CACHE_H
#include "context.h"

#include <stdbool.h>

/* A built program for (source, options) on the context's device from the cache, or NULL on any
 * miss, mismatch or unreadable file (the caller then compiles from source). `options` are the
 * complete build options. */
cl_program clattn__disk_cache_load(clattn_context *ctx, const char *src, size_t len,
                                   const char *options);

/* mkdir -p with mode 0700: true when the directory exists afterwards. */
bool clattn__cache_dir_ensure(const char *path);

/* Stores a built program's binary (temp file + rename; failures are silent: the cache is an
 * optimisation, never a requirement). */
void clattn__disk_cache_store(clattn_context *ctx, cl_program prog, const char *src, size_t len,
                              const char *options);

#endif
