/* On-disk program-binary cache. A file per (kernel source, build options, device name, device
 * version, driver version, platform version, clattn version, cache format), named by the
 * XXH3-128 hash of all of them, holding a header that repeats the key and a checksum of the
 * binary. The directory is the context's (resolved at create from its params and the
 * environment; "" = off), used only if it is trusted as ssh trusts its key directory. Anything
 * unexpected is a miss: a file that is not a regular file of the user's, a header or checksum
 * that does not match, a program without the kernels its source defines. A miss compiles from
 * source and rewrites the file through a new temporary name and rename(), so readers never see
 * half a file. */
#define _DEFAULT_SOURCE /* O_NOFOLLOW, DT_* */
#include "disk_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
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

/* The file's key; false when it cannot be computed (then the cache is not used: a miss). */
static bool make_key(const clattn_context *ctx, const char *src, size_t len, const char *options,
                     XXH128_hash_t *key)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return false;
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
    *key = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    return true;
}

bool clattn__cache_dir_trusted(const char *dir, char *why, size_t cap)
{
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return errno == ENOENT; /* created 0700 when first written */
    const char *reason = !S_ISDIR(sb.st_mode)     ? "is not a directory"
                         : sb.st_uid != geteuid() ? "is not owned by this user"
                         : (sb.st_mode & 022)     ? "is writable by other users"
                                                  : NULL;
    if (reason)
        snprintf(why, cap, "%s", reason);
    return reason == NULL;
}

int clattn__cache_open(const char *path)
{
    /* No link followed, no FIFO or device waited on. */
    const int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat sb;
    if (fd < 0)
        return -1;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_uid != geteuid() || (sb.st_mode & 022)) {
        close(fd);
        errno = EPERM;
        return -1;
    }
    return fd;
}

void clattn__cache_sweep(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    const time_t now = time(NULL);
    char path[4300];
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        const size_t n = strlen(e->d_name);
        struct stat sb;
        if (n < 4 || strcmp(e->d_name + n - 4, ".tmp") != 0 ||
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path ||
            lstat(path, &sb) != 0)
            continue;
        /* A writer renames its file within seconds: one ten minutes old was left by a crash. */
        if (S_ISREG(sb.st_mode) && sb.st_uid == geteuid() && now - sb.st_mtime > 600)
            unlink(path);
    }
    closedir(d);
}

/* Whether every kernel named in `kernels` (space-separated) is in the program. */
static bool has_kernels(cl_program prog, const char *kernels)
{
    size_t n = 0;
    if (!kernels || !*kernels)
        return true;
    if (clGetProgramInfo(prog, CL_PROGRAM_KERNEL_NAMES, 0, NULL, &n) != CL_SUCCESS || n == 0)
        return false;
    char *names = malloc(n + 2);
    bool ok = names && clGetProgramInfo(prog, CL_PROGRAM_KERNEL_NAMES, n, names + 1, NULL) == CL_SUCCESS;
    if (ok) { /* ";a;b;" so that each name is found whole */
        names[0] = ';';
        names[n] = ';';
        names[n + 1] = '\0';
    }
    for (const char *k = kernels; ok && *k;) {
        const size_t len = strcspn(k, " ");
        char want[128];
        if (len + 3 > sizeof want)
            ok = false;
        else {
            snprintf(want, sizeof want, ";%.*s;", (int)len, k);
            ok = strstr(names, want) != NULL;
        }
        k += len;
        while (*k == ' ')
            k++;
    }
    free(names);
    return ok;
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
                                   const char *options, const char *kernels)
{
    char path[4200];
    XXH128_hash_t key;
    if (!ctx->cache_dir[0] || !make_key(ctx, src, len, options, &key) ||
        !file_name(ctx, key, path, sizeof path))
        return NULL;
    const int fd = clattn__cache_open(path);
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
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
    } else if (!has_kernels(prog, kernels)) {
        /* Another program's binary under this name: whoever could write the directory. */
        clattn__log(ctx, CLATTN_LOG_WARN, "clattn: %s lacks kernels its source defines (%s): "
                                          "compiled from source instead", path, kernels);
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
    XXH128_hash_t key;
    if (!ctx->cache_dir[0] || !make_key(ctx, src, len, options, &key) ||
        !file_name(ctx, key, path, sizeof path) || !clattn__cache_dir_ensure(ctx->cache_dir))
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
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (f) {
        bool ok = fwrite(&h, sizeof h, 1, f) == 1 && fwrite(bin, 1, size, f) == size;
        ok = (fclose(f) == 0) && ok;
        if (!ok || rename(tmp, path) != 0)
            remove(tmp);
    } else if (fd >= 0) {
        close(fd);
        remove(tmp);
    }
    free(bin);
}
