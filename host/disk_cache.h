/* The on-disk cache of compiled program binaries (part of the program module). */
#ifndef CLATTN_DISK_CACHE_H
#define CLATTN_DISK_CACHE_H
#include "context.h"

#include <stdbool.h>

/* A built program for (source, options) on the context's device from the cache, or NULL on any
 * miss, mismatch or unreadable file (the caller then compiles from source). `options` are the
 * complete build options; `kernels` (space-separated, NULL: not checked) the kernel functions
 * the source defines, which the loaded program must contain. */
cl_program clattn__disk_cache_load(clattn_context *ctx, const char *src, size_t len,
                                   const char *options, const char *kernels);

/* Whether an existing cache directory may be used: a directory owned by this user and not
 * writable by others (as ssh checks its key directory); one that does not exist yet is created
 * 0700. Otherwise false, with the reason in `why`. */
bool clattn__cache_dir_trusted(const char *dir, char *why, size_t cap);

/* Opens a file of the cache directory for reading: a regular file of this user's, not writable
 * by others, no link followed, never blocking (a FIFO). A descriptor, or -1. */
int clattn__cache_open(const char *path);

/* Removes temporary files that writers which crashed left in the directory (older than ten
 * minutes). */
void clattn__cache_sweep(const char *dir);

/* mkdir -p with mode 0700: true when the directory exists afterwards. */
bool clattn__cache_dir_ensure(const char *path);

/* Stores a built program's binary (temp file + rename; failures are silent: the cache is an
 * optimisation, never a requirement). */
void clattn__disk_cache_store(clattn_context *ctx, cl_program prog, const char *src, size_t len,
                              const char *options);

#endif
