/* The on-disk program cache: a second context loads what the first compiled (files untouched);
 * corrupt, truncated and stale files are rebuilt and replaced; an unwritable directory and "off"
 * leave everything working. Each case runs in its own CLATTN_CACHE_DIR. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The setups every case of this file runs under (see harness.h). */
#define SETUPS ""

static char dir[512];

static void fresh_dir(const char *name)
{
    const char *base = getenv("CLATTN_TEST_SCRATCH");
    snprintf(dir, sizeof dir, "%.400s/%.60s-%ld", base ? base : "/tmp", name, (long)getpid());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%.511s'", dir);
    if (system(cmd) != 0)
        exit(2);
    setenv("CLATTN_CACHE_DIR", dir, 1);
}

/* Builds every kernel in a new context (its own memory cache), then destroys it. */
static clattn_status prepare_once(void)
{
    clattn_context *cc = NULL;
    clattn_status st = clattn_context_create(NULL, &cc);
    for (size_t k = 0; st == CL_SUCCESS && k < clattn_kernel_count(); k++)
        st = clattn_kernel_build(cc, clattn_kernel_name(k));
    clattn_context_destroy(&cc);
    return st;
}

/* Runs one small fused and unfused attention and checks a row by hand-free means: both paths
 * must agree, so the kernels loaded from the cache compute. */
static bool attention_works(void)
{
    bool ok = true;
    test_env e;
    env_open_default(&e);
    uint64_t seed = 3;
    view_buf Q = vb_new(&e, LAYOUT_BHTD, 1, 2, 9, 16, 0, 0, &seed, true);
    view_buf O1 = vb_new(&e, LAYOUT_BHTD, 1, 2, 9, 16, 0, 0, &seed, false);
    view_buf O2 = vb_new(&e, LAYOUT_BHTD, 1, 2, 9, 16, 0, 0, &seed, false);
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.mask.causal = CLATTN_CAUSAL_TOP_LEFT;
    p.path = CLATTN_PATH_FUSED;
    EXPECT_STATUS(clattn_sdpa(e.cc, e.queue, &Q.t, &Q.t, &Q.t, &O1.t, &p, 0, NULL, NULL), CLATTN_SUCCESS);
    p.path = CLATTN_PATH_UNFUSED;
    EXPECT_STATUS(clattn_sdpa(e.cc, e.queue, &Q.t, &Q.t, &Q.t, &O2.t, &p, 0, NULL, NULL), CLATTN_SUCCESS);
    float *a = malloc(O1.elems * 4), *b = malloc(O2.elems * 4);
    vb_read_all(&e, &O1, a);
    vb_read_all(&e, &O2, b);
    double *da = vb_dense(&O1, a), *db = vb_dense(&O2, b);
    ok &= check_close("fused vs unfused", da, db, O1.elems, TOL);
    free(a), free(b), free(da), free(db);
    vb_free(&Q), vb_free(&O1), vb_free(&O2);
    env_close(&e);
    return ok;
}

typedef struct entry {
    char name[300];
    long long ino, mtime_ns, size;
} entry;

static int by_name(const void *a, const void *b)
{
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

/* The cache files (*.bin) and their identities, sorted by name (readdir's order changes when a
 * file is replaced). */
static int list(entry *out, int cap)
{
    int n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < cap) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 4, ".bin") != 0)
            continue;
        struct stat st;
        char path[1024];
        snprintf(path, sizeof path, "%.511s/%.300s", dir, de->d_name);
        if (stat(path, &st) != 0)
            continue;
        snprintf(out[n].name, sizeof out[n].name, "%.299s", de->d_name);
        out[n].ino = (long long)st.st_ino;
        out[n].mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
        out[n].size = (long long)st.st_size;
        n++;
    }
    closedir(d);
    qsort(out, (size_t)n, sizeof *out, by_name);
    return n;
}

static bool warm_second_context_loads(void)
{
    bool ok = true;
    fresh_dir("warm");
    EXPECT_STATUS(prepare_once(), CLATTN_SUCCESS);
    entry before[64], after[64];
    int n = list(before, 64);
    printf("%d cache files after the first context\n", n);
    EXPECT(n >= (int)clattn_kernel_count());
    EXPECT_STATUS(prepare_once(), CLATTN_SUCCESS);
    /* A load never rewrites: same files, same inodes (a store would rename a new one in). */
    int m = list(after, 64);
    EXPECT(m == n);
    for (int i = 0; i < n && i < m; i++)
        EXPECT(strcmp(before[i].name, after[i].name) == 0 && before[i].ino == after[i].ino);
    ok &= attention_works();
    return ok;
}

/* Damages every cache file with `how`, then checks a new context rebuilds and replaces them. */
static bool damaged_files_are_replaced(const char *name, void (*damage)(const char *path))
{
    bool ok = true;
    fresh_dir(name);
    EXPECT_STATUS(prepare_once(), CLATTN_SUCCESS);
    entry files[64];
    int n = list(files, 64);
    EXPECT(n > 0);
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%.511s/%.300s", dir, files[i].name);
        damage(path);
    }
    entry damaged[64];
    list(damaged, 64);
    EXPECT_STATUS(prepare_once(), CLATTN_SUCCESS);
    entry after[64];
    int m = list(after, 64);
    EXPECT(m == n);
    int replaced = 0;
    for (int i = 0; i < m && i < n; i++)
        replaced += after[i].ino != damaged[i].ino && after[i].size == files[i].size;
    printf("%s: %d of %d files rebuilt and replaced\n", name, replaced, n);
    EXPECT(replaced == n);
    ok &= attention_works();
    return ok;
}

static void corrupt(const char *path)
{
    FILE *f = fopen(path, "r+b");
    fseek(f, -16, SEEK_END);
    fputs("garbage garbage", f); /* the binary's bytes change: its checksum no longer holds */
    fclose(f);
}
static void truncate_half(const char *path)
{
    struct stat st;
    stat(path, &st);
    if (truncate(path, st.st_size / 2) != 0)
        exit(2);
}
/* A file from another driver or clattn version, at this name: its header's key differs. */
static void stale_key(const char *path)
{
    FILE *f = fopen(path, "r+b");
    fseek(f, 16, SEEK_SET); /* magic[8], format, reserved, then the key */
    fputc('S', f);
    fclose(f);
}
static bool corrupt_file(void) { return damaged_files_are_replaced("corrupt", corrupt); }
static bool truncated_file(void) { return damaged_files_are_replaced("truncated", truncate_half); }
static bool stale_driver_version(void) { return damaged_files_are_replaced("stale", stale_key); }

static bool unwritable_or_off(void)
{
    bool ok = true;
    /* A directory that cannot be created (its parent is a file; root ignores permissions, so a
     * read-only mode would not test anything here). */
    fresh_dir("notadir");
    FILE *f = fopen(dir, "w");
    fputs("a file, not a directory", f);
    fclose(f);
    char inside[600];
    snprintf(inside, sizeof inside, "%.511s/cache", dir);
    setenv("CLATTN_CACHE_DIR", inside, 1);
    EXPECT_STATUS(prepare_once(), CLATTN_SUCCESS);
    ok &= attention_works();
    remove(dir);
    /* Off: nothing is written anywhere. */
    fresh_dir("off");
    setenv("CLATTN_CACHE_DIR", "off", 1);
    EXPECT_STATUS(prepare_once(), CLATTN_SUCCESS);
    ok &= attention_works();
    struct stat st;
    EXPECT(stat(dir, &st) != 0); /* never created */
    return ok;
}

/* The *_prepare calls build every kernel the call will run: after them, the calls themselves add
 * no file to a fresh cache directory (each build stores one). */
static bool prepare_builds_what_calls_run(void)
{
    bool ok = true;
    fresh_dir("prepare");
    test_env e;
    env_open_default(&e);
    entry files[256];
    uint64_t seed = 8;
    /* Scaled dot-product attention on each path, as a GQA decoder layer uses it. */
    view_buf Q = vb_new(&e, LAYOUT_BTHD, 2, 4, 19, 32, 0, 0, &seed, true);
    view_buf K = vb_new(&e, LAYOUT_BTHD, 2, 2, 19, 32, 0, 0, &seed, true);
    view_buf O = vb_new(&e, LAYOUT_BTHD, 2, 4, 19, 32, 0, 0, &seed, false);
    for (int path = CLATTN_PATH_UNFUSED; path <= CLATTN_PATH_FUSED; path++) {
        clattn_sdpa_params p = clattn_sdpa_params_default();
        p.mask.causal = CLATTN_CAUSAL_BOTTOM_RIGHT;
        p.path = (clattn_path)path;
        EXPECT_STATUS(clattn_sdpa_prepare(e.cc, &Q.t, &K.t, &K.t, &O.t, &p), CLATTN_SUCCESS);
        const int n = list(files, 256);
        EXPECT(n > 0);
        EXPECT_STATUS(clattn_sdpa(e.cc, e.queue, &Q.t, &K.t, &K.t, &O.t, &p, 0, NULL, NULL), CLATTN_SUCCESS);
        EXPECT(list(files, 256) == n);
        printf("sdpa path %d: %d kernel files after prepare, none added by the call\n", path, n);
    }
    /* A projection with bias. */
    view_buf X = vb_new(&e, LAYOUT_BHTD, 1, 1, 9, 16, 0, 0, &seed, true);
    view_buf W = vb_new(&e, LAYOUT_BHTD, 1, 1, 12, 16, 0, 0, &seed, true);
    view_buf b = vb_new(&e, LAYOUT_BHTD, 1, 1, 1, 12, 0, 0, &seed, true);
    view_buf Y = vb_new(&e, LAYOUT_BHTD, 1, 1, 9, 12, 0, 0, &seed, false);
    EXPECT_STATUS(clattn_linear_prepare(e.cc, &X.t, &W.t, &b.t, &Y.t), CLATTN_SUCCESS);
    int n = list(files, 256);
    EXPECT_STATUS(clattn_linear(e.cc, e.queue, &X.t, &W.t, &b.t, &Y.t, 0, NULL, NULL), CLATTN_SUCCESS);
    EXPECT(list(files, 256) == n);
    /* A KV cache: appends (equal and unequal counts), attention in one pass and split. */
    clattn_kv_cache_params kp = clattn_kv_cache_params_default();
    kp.batch = 2, kp.num_kv_heads = 2, kp.head_dim = 32, kp.capacity = 1024;
    kp.dtype = CLATTN_F16;
    clattn_kv_cache *kv = NULL;
    EXPECT_STATUS(clattn_kv_cache_create(e.cc, &kp, &kv), CLATTN_SUCCESS);
    view_buf Qd = vb_new(&e, LAYOUT_BHTD, 2, 4, 1, 32, 0, 0, &seed, true);
    view_buf Od = vb_new(&e, LAYOUT_BHTD, 2, 4, 1, 32, 0, 0, &seed, false);
    EXPECT_STATUS(clattn_kv_cache_prepare(kv, &Qd.t, &Od.t, NULL), CLATTN_SUCCESS);
    n = list(files, 256);
    view_buf Kn = vb_new(&e, LAYOUT_BHTD, 2, 2, 300, 16, 0, 0, &seed, true); /* 300 x 32 halves */
    clattn_tensor Kh = clattn_tensor_bhtd(Kn.t.buffer, 0, 2, 2, 300, 32);
    Kh.dtype = CLATTN_F16;
    const size_t counts[2] = {300, 120};
    clattn_kv_attend_params ap = clattn_kv_attend_params_default();
    for (int step = 0; step < 3; step++) {
        EXPECT_STATUS(clattn_kv_cache_append(kv, e.queue, &Kh, &Kh, step ? counts : NULL, 0, NULL, NULL),
                      CLATTN_SUCCESS);
        ap.splits = step ? 4 : 1;
        EXPECT_STATUS(clattn_kv_cache_attend(kv, e.queue, &Qd.t, &Od.t, &ap, 0, NULL, NULL), CLATTN_SUCCESS);
    }
    EXPECT(list(files, 256) == n);
    clattn_kv_cache_destroy(&kv);
    clFinish(e.queue);
    view_buf *all[] = {&Q, &K, &O, &X, &W, &b, &Y, &Qd, &Od, &Kn};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        vb_free(all[i]);
    env_close(&e);
    return ok;
}

static char tune_log[2048];
static void keep_log(void *user, clattn_log_level level, const char *msg)
{
    (void)user, (void)level;
    snprintf(tune_log, sizeof tune_log, "%s", msg);
}

/* A context on the default device with `k` as its params' overrides (and clblast_tuning). */
static clattn_context *tuned_context(const clattn_kernel_config *k, int clblast)
{
    clattn_context_params p = clattn_context_params_default();
    if (k)
        p.kernels = *k;
    p.clblast_tuning = clblast;
    p.log = keep_log;
    clattn_context *cc = NULL;
    CL_OK(clattn_context_create(&p, &cc));
    return cc;
}

/* The path of the one tune-*.txt file in the cache directory (false when there is none). */
static bool tune_file(char *path, size_t cap)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    bool found = false;
    while (d && (de = readdir(d)))
        if (strncmp(de->d_name, "tune-", 5) == 0 && strstr(de->d_name, ".txt") && !strstr(de->d_name, ".tmp")) {
            snprintf(path, cap, "%.400s/%.100s", dir, de->d_name);
            found = true;
        }
    if (d)
        closedir(d);
    return found;
}

/* clattn-tune's file: what it holds fills what params and environment leave unset; a damaged
 * file or a FIFO in its place is ignored (logged), never waited on; CLBlast's parameters apply
 * only when asked for, and never a set CLBlast 1.5 computes wrongly. */
static bool tune_file_precedence(void)
{
    bool ok = true;
    fresh_dir("tune");
    clattn_context *cc = tuned_context(NULL, 0);
    clattn_tuning t;
    EXPECT_STATUS(clattn_tuning_load(cc, &t), CLATTN_SUCCESS);
    EXPECT(t.kernels.flash_block_k == 0 && t.kernels.gemm_rows == 0 && t.clblast_xgemm[0] == 0);
    memset(&t, 0, sizeof t);
    t.kernels.flash_block_k = 32;
    t.kernels.gemm_engine = CLATTN_GEMM_ENGINE_CLATTN;
    t.kernels.gemm_rows = 4, t.kernels.gemm_vectors = 2, t.kernels.gemm_blocks = 2;
    EXPECT_STATUS(clattn_tuning_save(cc, &t), CLATTN_SUCCESS);
    clattn_tuning back;
    EXPECT_STATUS(clattn_tuning_load(cc, &back), CLATTN_SUCCESS);
    EXPECT(memcmp(&back, &t, sizeof t) == 0);
    clattn_context_destroy(&cc);

    /* The file's values, then the environment's, then the params'. */
    char text[1024];
    clattn_kernel_config k;
    cc = tuned_context(NULL, 0);
    EXPECT_STATUS(clattn_context_config(cc, &k, NULL), CLATTN_SUCCESS);
    EXPECT(k.flash_block_k == 32 && k.gemm_rows == 4 && k.gemm_vectors == 2 && k.gemm_blocks == 2);
    EXPECT_STATUS(clattn_context_describe_config(cc, text, sizeof text), CLATTN_SUCCESS);
    printf("%s", text);
    EXPECT(strstr(text, "fused block_k: 32 (tune file)") && strstr(text, "(tune file)\ngemm tile"));
    clattn_context_destroy(&cc);
    ok &= attention_works(); /* products on the tuned tile: fused and unfused agree */
    setenv("CLATTN_FLASH_BLOCK_K", "48", 1);
    cc = tuned_context(NULL, 0);
    EXPECT_STATUS(clattn_context_config(cc, &k, NULL), CLATTN_SUCCESS);
    EXPECT(k.flash_block_k == 48 && k.gemm_rows == 4);
    clattn_context_destroy(&cc);
    clattn_kernel_config given = {0};
    given.flash_block_k = 16;
    cc = tuned_context(&given, 0);
    EXPECT_STATUS(clattn_context_config(cc, &k, NULL), CLATTN_SUCCESS);
    EXPECT(k.flash_block_k == 16 && k.gemm_rows == 4);
    EXPECT_STATUS(clattn_context_describe_config(cc, text, sizeof text), CLATTN_SUCCESS);
    EXPECT(strstr(text, "fused block_k: 16 (params)") != NULL);
    clattn_context_destroy(&cc);
    unsetenv("CLATTN_FLASH_BLOCK_K");

    /* A damaged file: ignored, said through the log. */
    char path[600];
    EXPECT(tune_file(path, sizeof path));
    FILE *f = fopen(path, "w");
    fputs("format=1\ngemm_tile=99x1x1\n", f);
    fclose(f);
    tune_log[0] = '\0';
    cc = tuned_context(NULL, 0);
    EXPECT_STATUS(clattn_context_config(cc, &k, NULL), CLATTN_SUCCESS);
    EXPECT(k.gemm_rows == 0 && k.flash_block_k == 0);
    EXPECT(strstr(tune_log, "tune file") != NULL);
    clattn_context_destroy(&cc);
    /* A FIFO in its place: not opened for reading (it would block), not used. */
    remove(path);
    EXPECT(mkfifo(path, 0600) == 0);
    cc = tuned_context(NULL, 0);
    EXPECT_STATUS(clattn_context_config(cc, &k, NULL), CLATTN_SUCCESS);
    EXPECT(k.gemm_rows == 0);
    clattn_context_destroy(&cc);
    remove(path);

    /* CLBlast's parameters: a set 1.5 computes wrongly is refused; a sound one applies only
     * with clblast_tuning, and CLBlast's products stay correct on it. */
    cc = tuned_context(NULL, 0);
    memset(&t, 0, sizeof t);
    snprintf(t.clblast_xgemm, sizeof t.clblast_xgemm,
             "GEMMK=1 KREG=1 KWG=1 KWI=1 MDIMA=8 MDIMC=8 MWG=32 NDIMB=8 NDIMC=8 NWG=64 SA=0 SB=0 "
             "STRM=0 STRN=0 VWM=1 VWN=1");
    EXPECT_STATUS(clattn_tuning_save(cc, &t), CLATTN_SUCCESS);
    clattn_context_destroy(&cc);
    tune_log[0] = '\0';
    cc = tuned_context(NULL, 1);
    EXPECT_STATUS(clattn_context_describe_config(cc, text, sizeof text), CLATTN_SUCCESS);
    EXPECT(strstr(text, "CLBlast parameters: CLBlast's own") && strstr(tune_log, "not applied"));
    snprintf(t.clblast_xgemm, sizeof t.clblast_xgemm,
             "GEMMK=0 KREG=1 KWG=16 KWI=2 MDIMA=8 MDIMC=8 MWG=32 NDIMB=8 NDIMC=8 NWG=64 SA=0 SB=0 "
             "STRM=0 STRN=0 VWM=4 VWN=1");
    EXPECT_STATUS(clattn_tuning_save(cc, &t), CLATTN_SUCCESS);
    clattn_context_destroy(&cc);
    cc = tuned_context(NULL, 0);
    EXPECT_STATUS(clattn_context_describe_config(cc, text, sizeof text), CLATTN_SUCCESS);
    EXPECT(strstr(text, "CLBlast parameters: CLBlast's own") != NULL); /* not asked for */
    clattn_context_destroy(&cc);
    given = (clattn_kernel_config){0};
    given.gemm_engine = CLATTN_GEMM_ENGINE_CLBLAST;
    cc = tuned_context(&given, 1);
    EXPECT_STATUS(clattn_context_describe_config(cc, text, sizeof text), CLATTN_SUCCESS);
    EXPECT(strstr(text, "CLBlast parameters: the tune file's") != NULL);
    clattn_context_destroy(&cc);
    setenv("CLATTN_GEMM_ENGINE", "clblast", 1); /* both paths' products on the tuned CLBlast */
    ok &= attention_works();
    unsetenv("CLATTN_GEMM_ENGINE");
    /* No directory, no file to save. */
    clattn_context_params off = clattn_context_params_default();
    off.disk_cache_off = 1;
    CL_OK(clattn_context_create(&off, &cc));
    EXPECT_STATUS(clattn_tuning_save(cc, &t), CLATTN_ERROR_INVALID_ARGUMENT);
    clattn_context_destroy(&cc);
    return ok;
}

/* Whether the directory entry `name` is a regular file (not a link, FIFO, ...). */
static bool regular(const char *name)
{
    char path[1024];
    struct stat st;
    snprintf(path, sizeof path, "%.511s/%.300s", dir, name);
    return lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Files that are not what they seem: a FIFO (reading it would block the build forever), a
 * symbolic link to a good copy, a file others may write. Each is a miss, rebuilt and replaced by
 * a regular file; nothing hangs. */
static bool odd_files_are_misses(void)
{
    bool ok = true;
    fresh_dir("odd");
    EXPECT_STATUS(prepare_once(), CLATTN_SUCCESS);
    entry files[64];
    const int n = list(files, 64);
    EXPECT(n >= 3);
    char path[3][1024], copy[1040];
    for (int i = 0; i < 3 && i < n; i++)
        snprintf(path[i], sizeof path[i], "%.511s/%.300s", dir, files[i].name);
    EXPECT(unlink(path[0]) == 0 && mkfifo(path[0], 0600) == 0);
    snprintf(copy, sizeof copy, "%s.copy", path[1]);
    EXPECT(rename(path[1], copy) == 0 && symlink(copy, path[1]) == 0);
    EXPECT(chmod(path[2], 0666) == 0);
    EXPECT_STATUS(prepare_once(), CLATTN_SUCCESS);
    for (int i = 0; i < 3 && i < n; i++)
        EXPECT(regular(files[i].name));
    struct stat st;
    EXPECT(stat(path[2], &st) == 0 && (st.st_mode & 022) == 0);
    remove(copy);
    ok &= attention_works();
    return ok;
}

/* A forged entry: another program's binary under this key, its header's key and checksum made to
 * match (what anyone who can write the directory can do). A program that lacks the kernels its
 * source defines is a miss, compiled from source and replaced. (One built from the same source
 * with other options has the same kernels: that forgery only the directory's trust rules keep
 * out; see SECURITY.md.) */
static bool forged_entries_are_rebuilt(void)
{
    bool ok = true;
    fresh_dir("forged");
    EXPECT_STATUS(prepare_once(), CLATTN_SUCCESS); /* one file per kernel file */
    entry files[64];
    const int n = list(files, 64);
    EXPECT(n == (int)clattn_kernel_count());
    unsigned char *data[64] = {0};
    long size[64] = {0};
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%.511s/%.300s", dir, files[i].name);
        FILE *f = fopen(path, "rb");
        fseek(f, 0, SEEK_END);
        size[i] = ftell(f);
        rewind(f);
        data[i] = malloc((size_t)size[i]);
        EXPECT(fread(data[i], 1, (size_t)size[i], f) == (size_t)size[i]);
        fclose(f);
    }
    /* File i gets file i + 1's binary and checksum under its own key (header bytes 16..31). */
    for (int i = 0; i < n; i++) {
        const int j = (i + 1) % n;
        char path[1024];
        snprintf(path, sizeof path, "%.511s/%.300s", dir, files[i].name);
        unsigned char *forged = malloc((size_t)size[j]);
        memcpy(forged, data[j], (size_t)size[j]);
        memcpy(forged + 16, data[i] + 16, 16);
        FILE *f = fopen(path, "wb");
        fwrite(forged, 1, (size_t)size[j], f);
        fclose(f);
        free(forged);
    }
    entry forged[64];
    list(forged, 64);
    EXPECT_STATUS(prepare_once(), CLATTN_SUCCESS);
    entry after[64];
    const int m = list(after, 64);
    int rebuilt = 0;
    for (int i = 0; i < m && i < n; i++)
        rebuilt += after[i].ino != forged[i].ino && after[i].size == files[i].size;
    printf("%d of %d forged entries rebuilt\n", rebuilt, n);
    EXPECT(m == n && rebuilt == n);
    for (int i = 0; i < n; i++)
        free(data[i]);
    ok &= attention_works();
    return ok;
}

static char cache_log[4096];
static void append_log(void *user, clattn_log_level level, const char *msg)
{
    (void)user, (void)level;
    const size_t used = strlen(cache_log);
    snprintf(cache_log + used, sizeof cache_log - used, "%s\n", msg);
}

/* A cache directory other users may write is not used (they could plant binaries): the context
 * says so through the log, its calls work, and nothing is read from or written to it. Temporary
 * files a crashed writer left are removed when a context opens a trusted directory. */
static bool untrusted_directory_is_not_used(void)
{
    bool ok = true;
    fresh_dir("untrusted");
    EXPECT_STATUS(prepare_once(), CLATTN_SUCCESS);
    entry before[64], after[64];
    const int n = list(before, 64);
    EXPECT(chmod(dir, 0777) == 0);
    char planted[1024];
    snprintf(planted, sizeof planted, "%.511s/%.300s", dir, before[0].name);
    FILE *f = fopen(planted, "wb"); /* what another user would plant: garbage, never read */
    fputs("planted", f);
    fclose(f);
    list(before, 64);
    clattn_context_params p = clattn_context_params_default();
    p.log = append_log;
    cache_log[0] = '\0';
    clattn_context *cc = NULL;
    CL_OK(clattn_context_create(&p, &cc));
    printf("log: %s", cache_log);
    EXPECT(strstr(cache_log, "disk cache off") && strstr(cache_log, "writable by other users"));
    const char *used = NULL;
    EXPECT_STATUS(clattn_context_config(cc, NULL, &used), CLATTN_SUCCESS);
    EXPECT(used && used[0] == '\0');
    for (size_t k = 0; k < clattn_kernel_count(); k++)
        EXPECT_STATUS(clattn_kernel_build(cc, clattn_kernel_name(k)), CLATTN_SUCCESS);
    clattn_context_destroy(&cc);
    const int m = list(after, 64);
    EXPECT(m == n);
    for (int i = 0; i < n && i < m; i++)
        EXPECT(after[i].ino == before[i].ino && after[i].mtime_ns == before[i].mtime_ns);

    /* Trusted again: an old temporary file goes, a fresh one (a writer at work) stays. */
    EXPECT(chmod(dir, 0700) == 0);
    char old_tmp[1024], new_tmp[1024];
    snprintf(old_tmp, sizeof old_tmp, "%.511s/%.300s.1.0x1.tmp", dir, before[1].name);
    snprintf(new_tmp, sizeof new_tmp, "%.511s/%.300s.2.0x2.tmp", dir, before[1].name);
    fclose(fopen(old_tmp, "wb"));
    fclose(fopen(new_tmp, "wb"));
    const struct timespec hour_ago[2] = {{time(NULL) - 3600, 0}, {time(NULL) - 3600, 0}};
    EXPECT(utimensat(AT_FDCWD, old_tmp, hour_ago, 0) == 0);
    CL_OK(clattn_context_create(NULL, &cc));
    clattn_context_destroy(&cc);
    struct stat st;
    EXPECT(stat(old_tmp, &st) != 0 && stat(new_tmp, &st) == 0);
    remove(new_tmp);
    return ok;
}

int main(int argc, char **argv)
{
    static const test_case cases[] = {
        CASE(warm_second_context_loads),
        CASE(corrupt_file),
        CASE(truncated_file),
        CASE(stale_driver_version),
        CASE(unwritable_or_off),
        CASE(prepare_builds_what_calls_run),
        CASE(tune_file_precedence),
        CASE(odd_files_are_misses),
        CASE(forged_entries_are_rebuilt),
        CASE(untrusted_directory_is_not_used),
    };
    return run_cases(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
