/* The kernel configuration a context runs with: the params' overrides, the environment's, the
 * tune file's, the device table's, member by member in that order; and the tune file itself. */
#ifndef CLATTN_CONFIG_H
#define CLATTN_CONFIG_H
#include "clattn.h"

#include <stdbool.h>

struct clattn_context;

/* The settings, each with its origin. */
enum { CONFIG_FLASH_VARIANT, CONFIG_FLASH_BLOCK_K, CONFIG_FLASH_WG, CONFIG_GEMM_ENGINE,
       CONFIG_GEMM_TILE, CONFIG_COUNT };
typedef enum clattn_origin {
    CLATTN_ORIGIN_TABLE = 0, CLATTN_ORIGIN_TUNE_FILE, CLATTN_ORIGIN_ENVIRONMENT, CLATTN_ORIGIN_PARAMS
} clattn_origin;

/* Checks the params' overrides, then fills what they leave unset from the environment. */
clattn_status clattn__config_resolve(const clattn_kernel_config *given, clattn_kernel_config *out,
                                     unsigned char origin[CONFIG_COUNT]);

/* Fills what is still unset from the tune file of the context's device (its info and cache
 * directory known), and hands its CLBlast parameters to the GEMM module when `clblast`. A
 * missing file changes nothing; an unreadable or malformed one is logged and ignored. */
void clattn__config_from_tune_file(struct clattn_context *ctx, bool clblast);

#endif
