/* On-disk program-binary cache. A file per (kernel source, build options, device name, device
 * version, driver version, platform version, clattn version, cache format), named by the
 * XXH3-128 hash of all of them, holding a header that repeats the key and a checksum of the
 * binary. The directory is the context's (resolved at create from its params and the
 * environment; "" = off). Anything unexpected is a miss; a miss compiles from source and rewrites
 * the file through a temporary name and rename(), so readers never see half a file. */
#include "disk_cache.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define CACHE_FORMAT 1u
static const char MAGIC[8] = {'C', 'L', 'A', 'T', 'T', 'N', 'P', 'B'};

typedef struct file_header {
    char magic[8];
    uint32_t format;
    uint32_t reserved;
    uint64_t key_high, key_low; /* the XXH3-128 key the name is made of */
    uint64_t size;              /* bytes of binary after the header */
    uint64_t checksum;          /* XXH3-64 of those bytes */
} file_header;

/* mkdir -p; true when the directory exists afterwards. */
bool clattn__cache_dir_ensure(const char *path)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return false;
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0700);
            *p = '/';
        }
    }
    return mkdir(tmp, 0700) == 0 || errno == EEXIST;
}

static XXH128_hash_t make_key(const clattn_context *ctx, const char *src, size_t len,
                              const char *options)
{
    XXH3_state_t *st = XXH3_createState();
    XXH128_hash_t h = {0, 0};
    if (!st)
        return h;
    XXH3_128bits_reset(st);
    const uint32_t format = CACHE_FORMAT;
    const clattn_device_info *i = &ctx->info;
    const char *parts[] = {CLATTN_VERSION_STRING, options, i->name, i->device_version,
                           i->driver_version, i->platform_version};
    XXH3_128bits_update(st, &format, sizeof format);
    /* Each part with its length, so that no two splits of the same bytes collide. */
    for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
        uint64_t n = strlen(parts[k]);
        XXH3_128bits_update(st, &n, sizeof n);
        XXH3_128bits_update(st, parts[k], n);
    }
    uint64_t n = len;
    XXH3_128bits_update(st, &n, sizeof n);
    XXH3_128bits_update(st, src, len);
    h = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    return h;
}

static bool file_name(const clattn_context *ctx, XXH128_hash_t key, char *out, size_t cap)
{
    if (!ctx->cache_dir[0])
        return false;
    int n = snprintf(out, cap, "%s/%016llx%016llx.bin", ctx->cache_dir,
                     (unsigned long long)key.high64, (unsigned long long)key.low64);
    return n > 0 && (size_t)n < cap;
}

cl_program clattn__disk_cache_load(clattn_context *ctx, const char *src, size_t len,
                                   const char *options)
{
    char path[4200];
    if (!ctx->cache_dir[0])
        return NULL;
    XXH128_hash_t key = make_key(ctx, src, len, options);
    if (!file_name(ctx, key, path, sizeof path))
        return NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    file_header h;
    unsigned char *bin = NULL;
    cl_program prog = NULL;
    if (fread(&h, sizeof h, 1, f) != 1 || memcmp(h.magic, MAGIC, sizeof MAGIC) != 0 ||
        h.format != CACHE_FORMAT || h.key_high != key.high64 || h.key_low != key.low64 ||
        h.size == 0 || h.size > ((uint64_t)1 << 30))
        goto done;
    bin = malloc(h.size);
    if (!bin || fread(bin, 1, h.size, f) != h.size || fgetc(f) != EOF ||
        XXH3_64bits(bin, h.size) != h.checksum)
        goto done;
    const size_t size = h.size;
    const unsigned char *bins[1] = {bin};
    cl_int status, err;
    prog = clCreateProgramWithBinary(ctx->context, 1, &ctx->device, &size, bins, &status, &err);
    if (err != CL_SUCCESS || status != CL_SUCCESS) {
        if (prog)
            clReleaseProgram(prog);
        prog = NULL;
        goto done;
    }
    if (clBuildProgram(prog, 1, &ctx->device, options, NULL, NULL) != CL_SUCCESS) {
        clReleaseProgram(prog);
        prog = NULL;
    }
done:
    free(bin);
    fclose(f);
    return prog;
}

void clattn__disk_cache_store(clattn_context *ctx, cl_program prog, const char *src, size_t len,
                              const char *options)
{
    char path[4200], tmp[4300];
    if (!ctx->cache_dir[0])
        return;
    XXH128_hash_t key = make_key(ctx, src, len, options);
    if (!file_name(ctx, key, path, sizeof path) || !clattn__cache_dir_ensure(ctx->cache_dir))
        return;
    size_t size = 0;
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL) != CL_SUCCESS ||
        size == 0)
        return;
    unsigned char *bin = malloc(size);
    unsigned char *bins[1] = {bin};
    if (!bin || clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL) != CL_SUCCESS) {
        free(bin);
        return;
    }
    file_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, MAGIC, sizeof MAGIC);
    h.format = CACHE_FORMAT;
    h.key_high = key.high64;
    h.key_low = key.low64;
    h.size = size;
    h.checksum = XXH3_64bits(bin, size);
    /* A name no other writer uses, then an atomic rename over whatever was there. */
    snprintf(tmp, sizeof tmp, "%s.%ld.%p.tmp", path, (long)getpid(), (void *)prog);
    FILE *f = fopen(tmp, "wb");
    if (f) {
        bool ok = fwrite(&h, sizeof h, 1, f) == 1 && fwrite(bin, 1, size, f) == size;
        ok = (fclose(f) == 0) && ok;
        if (!ok || rename(tmp, path) != 0)
            remove(tmp);
    }
    free(bin);
}
