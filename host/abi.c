/* What a program or a binding can ask of the binary it loaded: version, ABI number, and the size
 * of every public struct (so that a binding that mirrors them, such as the Python package, can
 * refuse a library whose layout it does not know). */
#include "clattn.h"

#include <string.h>

const char *clattn_version(void)
{
    return CLATTN_VERSION_STRING;
}

int clattn_abi_version(void)
{
    return CLATTN_ABI_VERSION;
}

#define STRUCT_ROW(type) {#type, sizeof(type)}
static const struct {
    const char *name;
    size_t size;
} struct_rows[] = {
    STRUCT_ROW(clattn_tensor),           STRUCT_ROW(clattn_kernel_config),
    STRUCT_ROW(clattn_context_params),   STRUCT_ROW(clattn_device_info),
    STRUCT_ROW(clattn_tuning),           STRUCT_ROW(clattn_mask_params),
    STRUCT_ROW(clattn_logit_params),     STRUCT_ROW(clattn_sdpa_params),
    STRUCT_ROW(clattn_rope_params),      STRUCT_ROW(clattn_mha_params),
    STRUCT_ROW(clattn_mha_forward_params), STRUCT_ROW(clattn_kv_cache_params),
    STRUCT_ROW(clattn_kv_attend_params),
};

size_t clattn_struct_size(const char *name)
{
    if (!name)
        return 0;
    for (size_t i = 0; i < sizeof struct_rows / sizeof struct_rows[0]; i++)
        if (strcmp(struct_rows[i].name, name) == 0)
            return struct_rows[i].size;
    return 0;
}
