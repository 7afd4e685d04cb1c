/* The kernel configuration of a context, and the tune file clattn-tune writes (see config.h). */
#include "config.h"

#include "context.h"
#include "disk_cache.h"
#include "gemm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define TUNE_FORMAT 1
#define TUNE_MAX_BYTES 16384

/* A positive integer from the environment, or 0 when unset or not one. */
static uint32_t env_count(const char *name)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return 0;
    char *end;
    long v = strtol(s, &end, 10);
    return (*end == '\0' && v > 0 && v <= 4096) ? (uint32_t)v : 0;
}

/* "ROWSxVECTORSxBLOCKS" into the three tile members; false when malformed or out of range. */
static bool parse_tile(const char *s, clattn_kernel_config *k)
{
    unsigned r, v, b;
    char tail;
    if (!s || sscanf(s, "%ux%ux%u%c", &r, &v, &b, &tail) != 3)
        return false;
    if (r < 1 || r > 16 || v < 1 || v > 8 || b < 1 || b > 64)
        return false;
    k->gemm_rows = r;
    k->gemm_vectors = v;
    k->gemm_blocks = b;
    return true;
}

static bool tile_valid(const clattn_kernel_config *k)
{
    const bool none = !k->gemm_rows && !k->gemm_vectors && !k->gemm_blocks;
    return none || (k->gemm_rows >= 1 && k->gemm_rows <= 16 && k->gemm_vectors >= 1 &&
                    k->gemm_vectors <= 8 && k->gemm_blocks >= 1 && k->gemm_blocks <= 64);
}

static bool config_valid(const clattn_kernel_config *k)
{
    return CLATTN_RESERVED_ZERO(k) && k->flash_variant >= CLATTN_FLASH_VARIANT_AUTO &&
           k->flash_variant <= CLATTN_FLASH_VARIANT_GPU && k->flash_block_k <= 4096 &&
           k->flash_wg <= 4096 && k->gemm_engine >= CLATTN_GEMM_ENGINE_AUTO &&
           k->gemm_engine <= CLATTN_GEMM_ENGINE_CLATTN && tile_valid(k);
}

/* Copies the members of `src` that `dst` leaves unset, marking their origin. */
static void fill_unset(clattn_kernel_config *dst, const clattn_kernel_config *src,
                       unsigned char origin[CONFIG_COUNT], clattn_origin from)
{
    if (!dst->flash_variant && src->flash_variant)
        dst->flash_variant = src->flash_variant, origin[CONFIG_FLASH_VARIANT] = from;
    if (!dst->flash_block_k && src->flash_block_k)
        dst->flash_block_k = src->flash_block_k, origin[CONFIG_FLASH_BLOCK_K] = from;
    if (!dst->flash_wg && src->flash_wg)
        dst->flash_wg = src->flash_wg, origin[CONFIG_FLASH_WG] = from;
    if (!dst->gemm_engine && src->gemm_engine)
        dst->gemm_engine = src->gemm_engine, origin[CONFIG_GEMM_ENGINE] = from;
    if (!dst->gemm_rows && src->gemm_rows) {
        dst->gemm_rows = src->gemm_rows;
        dst->gemm_vectors = src->gemm_vectors;
        dst->gemm_blocks = src->gemm_blocks;
        origin[CONFIG_GEMM_TILE] = from;
    }
}

clattn_status clattn__config_resolve(const clattn_kernel_config *given, clattn_kernel_config *out,
                                     unsigned char origin[CONFIG_COUNT])
{
    if (!config_valid(given))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    memset(origin, CLATTN_ORIGIN_TABLE, CONFIG_COUNT);
    fill_unset(out, given, origin, CLATTN_ORIGIN_PARAMS);
    clattn_kernel_config env = {0};
    const char *v = getenv("CLATTN_FLASH_VARIANT");
    env.flash_variant = v && strcmp(v, "cpu") == 0   ? CLATTN_FLASH_VARIANT_CPU
                        : v && strcmp(v, "gpu") == 0 ? CLATTN_FLASH_VARIANT_GPU
                                                     : CLATTN_FLASH_VARIANT_AUTO;
    v = getenv("CLATTN_GEMM_ENGINE");
    env.gemm_engine = v && strcmp(v, "clblast") == 0  ? CLATTN_GEMM_ENGINE_CLBLAST
                      : v && strcmp(v, "clattn") == 0 ? CLATTN_GEMM_ENGINE_CLATTN
                                                      : CLATTN_GEMM_ENGINE_AUTO;
    env.flash_block_k = env_count("CLATTN_FLASH_BLOCK_K");
    env.flash_wg = env_count("CLATTN_FLASH_WG");
    parse_tile(getenv("CLATTN_GEMM_TILE"), &env);
    fill_unset(out, &env, origin, CLATTN_ORIGIN_ENVIRONMENT);
    return CL_SUCCESS;
}

/* --- the tune file ---------------------------------------------------------------------------- */

/* <cache dir>/tune-<hash of device, driver, platform and library versions>.txt */
static bool tune_path(const clattn_context *ctx, char *out, size_t cap)
{
    if (!ctx->cache_dir[0])
        return false;
    const clattn_device_info *i = &ctx->info;
    char key[2048];
    snprintf(key, sizeof key, "%d|%s|%s|%s|%s|%s", TUNE_FORMAT, i->name, i->device_version,
             i->driver_version, i->platform_version, CLATTN_VERSION_STRING);
    const int n = snprintf(out, cap, "%s/tune-%016llx.txt", ctx->cache_dir,
                           (unsigned long long)XXH3_64bits(key, strlen(key)));
    return n > 0 && (size_t)n < cap;
}

static const char *variant_names[] = {"auto", "cpu", "gpu"};
static const char *engine_names[] = {"auto", "clblast", "clattn"};

static int index_of(const char *const *names, int n, const char *s)
{
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

static unsigned long parse_count(const char *s, bool *ok)
{
    char *end;
    const unsigned long v = strtoul(s, &end, 10);
    *ok = *ok && *s && *end == '\0' && v <= 4096;
    return v;
}

/* Parses a tune file's text; false when a known key has a bad value. */
static bool parse_tune(char *text, clattn_tuning *t)
{
    memset(t, 0, sizeof *t);
    bool ok = true, format = false;
    for (char *line = strtok(text, "\n"); line && ok; line = strtok(NULL, "\n")) {
        char *eq = strchr(line, '=');
        if (line[0] == '#' || !eq)
            continue;
        *eq = '\0';
        const char *key = line, *val = eq + 1;
        int i;
        if (strcmp(key, "format") == 0)
            format = strcmp(val, "1") == 0;
        else if (strcmp(key, "flash_variant") == 0)
            ok = (i = index_of(variant_names, 3, val)) >= 0, t->kernels.flash_variant = (clattn_flash_variant)(i < 0 ? 0 : i);
        else if (strcmp(key, "gemm_engine") == 0)
            ok = (i = index_of(engine_names, 3, val)) >= 0, t->kernels.gemm_engine = (clattn_gemm_engine)(i < 0 ? 0 : i);
        else if (strcmp(key, "flash_block_k") == 0)
            t->kernels.flash_block_k = (uint32_t)parse_count(val, &ok);
        else if (strcmp(key, "flash_wg") == 0)
            t->kernels.flash_wg = (uint32_t)parse_count(val, &ok);
        else if (strcmp(key, "gemm_tile") == 0)
            ok = strcmp(val, "0") == 0 || parse_tile(val, &t->kernels);
        else if (strcmp(key, "clblast_xgemm") == 0)
            ok = strlen(val) < sizeof t->clblast_xgemm &&
                 snprintf(t->clblast_xgemm, sizeof t->clblast_xgemm, "%s", val) >= 0;
    }
    return ok && format && config_valid(&t->kernels);
}

/* Reads the tune file: CL_SUCCESS with *found, or an I/O or format problem (CLATTN_ERROR_IO). */
static clattn_status read_tune(const clattn_context *ctx, clattn_tuning *t, bool *found)
{
    memset(t, 0, sizeof *t);
    *found = false;
    char path[4200];
    if (!tune_path(ctx, path, sizeof path))
        return CL_SUCCESS;
    /* Under the disk cache's rules: a regular file of the user's, no link, no FIFO waited on. */
    const int fd = clattn__cache_open(path);
    if (fd < 0)
        return errno == ENOENT ? CL_SUCCESS : CLATTN_ERROR_IO;
    struct stat sb;
    char *text = NULL;
    clattn_status st = CLATTN_ERROR_IO;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size < TUNE_MAX_BYTES &&
        (text = calloc(1, (size_t)sb.st_size + 1)) != NULL &&
        read(fd, text, (size_t)sb.st_size) == (ssize_t)sb.st_size && parse_tune(text, t)) {
        st = CL_SUCCESS;
        *found = true;
    }
    free(text);
    close(fd);
    if (st != CL_SUCCESS)
        memset(t, 0, sizeof *t);
    return st;
}

void clattn__config_from_tune_file(clattn_context *ctx, bool clblast)
{
    clattn_tuning t;
    bool found;
    if (read_tune(ctx, &t, &found) != CL_SUCCESS) {
        clattn__log(ctx, CLATTN_LOG_WARN, "clattn: ignoring the unreadable or malformed tune file "
                                          "in %s (clattn-tune writes a new one)", ctx->cache_dir);
        return;
    }
    if (!found)
        return;
    fill_unset(&ctx->kernels, &t.kernels, ctx->kernels_origin, CLATTN_ORIGIN_TUNE_FILE);
    if (clblast && t.clblast_xgemm[0]) {
        const clattn_status st = clattn__gemm_use_xgemm(ctx, t.clblast_xgemm);
        if (st != CL_SUCCESS)
            clattn__log(ctx, CLATTN_LOG_WARN, "clattn: the tune file's CLBlast parameters were "
                                              "not applied: %s", clattn_status_name(st));
        ctx->clblast_tuned = st == CL_SUCCESS;
    }
}

clattn_status clattn_tuning_load(const clattn_context *ctx, clattn_tuning *t)
{
    if (!ctx || !t)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    bool found;
    return read_tune(ctx, t, &found);
}

clattn_status clattn_tuning_save(const clattn_context *ctx, const clattn_tuning *t)
{
    if (!ctx || !t || !config_valid(&t->kernels) || !CLATTN_RESERVED_ZERO(t) ||
        !memchr(t->clblast_xgemm, '\0', sizeof t->clblast_xgemm) ||
        strchr(t->clblast_xgemm, '\n'))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    char path[4200], tmp[4300];
    if (!tune_path(ctx, path, sizeof path))
        return CLATTN_ERROR_INVALID_ARGUMENT; /* no disk cache directory */
    if (!clattn__cache_dir_ensure(ctx->cache_dir))
        return CLATTN_ERROR_IO;
    const clattn_kernel_config *k = &t->kernels;
    char tile[32] = "0";
    if (k->gemm_rows)
        snprintf(tile, sizeof tile, "%ux%ux%u", k->gemm_rows, k->gemm_vectors, k->gemm_blocks);
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        return CLATTN_ERROR_IO;
    }
    const clattn_device_info *i = &ctx->info;
    bool ok = fprintf(f,
                      "# clattn tune file: %s, driver %s, clattn %s (written by clattn-tune)\n"
                      "format=%d\nflash_variant=%s\nflash_block_k=%u\nflash_wg=%u\n"
                      "gemm_engine=%s\ngemm_tile=%s\nclblast_xgemm=%s\n",
                      i->name, i->driver_version, CLATTN_VERSION_STRING, TUNE_FORMAT,
                      variant_names[k->flash_variant], k->flash_block_k, k->flash_wg,
                      engine_names[k->gemm_engine], tile, t->clblast_xgemm) > 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return CLATTN_ERROR_IO;
    }
    return CL_SUCCESS;
}

/* --- in words ----------------------------------------------------------------------------------- */

clattn_status clattn_context_describe_config(const clattn_context *ctx, char *buf, size_t cap)
{
    if (!ctx || !buf || cap == 0)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    static const char *origins[] = {"table", "tune file", "environment", "params"};
    const clattn_kernel_config *k = &ctx->kernels;
    const unsigned char *o = ctx->kernels_origin;
    char tile[64] = "by the device's vector width";
    if (k->gemm_rows)
        snprintf(tile, sizeof tile, "%u rows x %u vectors x %u blocks", k->gemm_rows,
                 k->gemm_vectors, k->gemm_blocks);
    char block_k[32] = "by device and head dims", wg[32] = "by device";
    if (k->flash_block_k)
        snprintf(block_k, sizeof block_k, "%u", k->flash_block_k);
    if (k->flash_wg)
        snprintf(wg, sizeof wg, "%u", k->flash_wg);
    snprintf(buf, cap,
             "fused variant: %s (%s)\nfused block_k: %s (%s)\nfused work-group: %s (%s)\n"
             "gemm engine: %s (%s)\ngemm tile: %s (%s)\nCLBlast parameters: %s\n",
             k->flash_variant ? variant_names[k->flash_variant] : "by device type",
             origins[o[CONFIG_FLASH_VARIANT]], block_k, origins[o[CONFIG_FLASH_BLOCK_K]], wg,
             origins[o[CONFIG_FLASH_WG]],
             k->gemm_engine ? engine_names[k->gemm_engine] : "by device type",
             origins[o[CONFIG_GEMM_ENGINE]], tile, origins[o[CONFIG_GEMM_TILE]],
             ctx->clblast_tuned ? "the tune file's" : "CLBlast's own");
    return CL_SUCCESS;
}
