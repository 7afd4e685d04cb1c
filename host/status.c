/* Status names and messages: library codes from CLATTN_STATUS_LIST, OpenCL codes by name. */
#include "clattn.h"

#include <stddef.h>

typedef struct status_row {
    clattn_status code;
    const char *name;
    const char *message;
} status_row;

static const status_row library_rows[] = {
#define CLATTN_X_ROW(name, value, msg) {value, #name, msg},
    CLATTN_STATUS_LIST(CLATTN_X_ROW)
#undef CLATTN_X_ROW
};

/* OpenCL 1.2 error codes, which calls pass through unchanged. */
#define CL_ROW(name, msg) {name, #name, msg}
static const status_row opencl_rows[] = {
    CL_ROW(CL_DEVICE_NOT_FOUND, "OpenCL: device not found"),
    CL_ROW(CL_DEVICE_NOT_AVAILABLE, "OpenCL: device not available"),
    CL_ROW(CL_COMPILER_NOT_AVAILABLE, "OpenCL: compiler not available"),
    CL_ROW(CL_MEM_OBJECT_ALLOCATION_FAILURE, "OpenCL: memory object allocation failed"),
    CL_ROW(CL_OUT_OF_RESOURCES, "OpenCL: out of device resources"),
    CL_ROW(CL_OUT_OF_HOST_MEMORY, "OpenCL: out of host memory"),
    CL_ROW(CL_PROFILING_INFO_NOT_AVAILABLE, "OpenCL: profiling info not available"),
    CL_ROW(CL_MEM_COPY_OVERLAP, "OpenCL: memory copy overlap"),
    CL_ROW(CL_IMAGE_FORMAT_MISMATCH, "OpenCL: image format mismatch"),
    CL_ROW(CL_IMAGE_FORMAT_NOT_SUPPORTED, "OpenCL: image format not supported"),
    CL_ROW(CL_BUILD_PROGRAM_FAILURE, "OpenCL: program build failed"),
    CL_ROW(CL_MAP_FAILURE, "OpenCL: map failed"),
    CL_ROW(CL_MISALIGNED_SUB_BUFFER_OFFSET, "OpenCL: misaligned sub-buffer offset"),
    CL_ROW(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST, "OpenCL: an event in the wait list failed"),
    CL_ROW(CL_COMPILE_PROGRAM_FAILURE, "OpenCL: compile failed"),
    CL_ROW(CL_LINKER_NOT_AVAILABLE, "OpenCL: linker not available"),
    CL_ROW(CL_LINK_PROGRAM_FAILURE, "OpenCL: link failed"),
    CL_ROW(CL_DEVICE_PARTITION_FAILED, "OpenCL: device partition failed"),
    CL_ROW(CL_KERNEL_ARG_INFO_NOT_AVAILABLE, "OpenCL: kernel arg info not available"),
    CL_ROW(CL_INVALID_VALUE, "OpenCL: invalid value"),
    CL_ROW(CL_INVALID_DEVICE_TYPE, "OpenCL: invalid device type"),
    CL_ROW(CL_INVALID_PLATFORM, "OpenCL: invalid platform"),
    CL_ROW(CL_INVALID_DEVICE, "OpenCL: invalid device"),
    CL_ROW(CL_INVALID_CONTEXT, "OpenCL: invalid context"),
    CL_ROW(CL_INVALID_QUEUE_PROPERTIES, "OpenCL: invalid queue properties"),
    CL_ROW(CL_INVALID_COMMAND_QUEUE, "OpenCL: invalid command queue"),
    CL_ROW(CL_INVALID_HOST_PTR, "OpenCL: invalid host pointer"),
    CL_ROW(CL_INVALID_MEM_OBJECT, "OpenCL: invalid memory object"),
    CL_ROW(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR, "OpenCL: invalid image format descriptor"),
    CL_ROW(CL_INVALID_IMAGE_SIZE, "OpenCL: invalid image size"),
    CL_ROW(CL_INVALID_SAMPLER, "OpenCL: invalid sampler"),
    CL_ROW(CL_INVALID_BINARY, "OpenCL: invalid binary"),
    CL_ROW(CL_INVALID_BUILD_OPTIONS, "OpenCL: invalid build options"),
    CL_ROW(CL_INVALID_PROGRAM, "OpenCL: invalid program"),
    CL_ROW(CL_INVALID_PROGRAM_EXECUTABLE, "OpenCL: invalid program executable"),
    CL_ROW(CL_INVALID_KERNEL_NAME, "OpenCL: invalid kernel name"),
    CL_ROW(CL_INVALID_KERNEL_DEFINITION, "OpenCL: invalid kernel definition"),
    CL_ROW(CL_INVALID_KERNEL, "OpenCL: invalid kernel"),
    CL_ROW(CL_INVALID_ARG_INDEX, "OpenCL: invalid argument index"),
    CL_ROW(CL_INVALID_ARG_VALUE, "OpenCL: invalid argument value"),
    CL_ROW(CL_INVALID_ARG_SIZE, "OpenCL: invalid argument size"),
    CL_ROW(CL_INVALID_KERNEL_ARGS, "OpenCL: invalid kernel arguments"),
    CL_ROW(CL_INVALID_WORK_DIMENSION, "OpenCL: invalid work dimension"),
    CL_ROW(CL_INVALID_WORK_GROUP_SIZE, "OpenCL: invalid work-group size"),
    CL_ROW(CL_INVALID_WORK_ITEM_SIZE, "OpenCL: invalid work-item size"),
    CL_ROW(CL_INVALID_GLOBAL_OFFSET, "OpenCL: invalid global offset"),
    CL_ROW(CL_INVALID_EVENT_WAIT_LIST, "OpenCL: invalid event wait list"),
    CL_ROW(CL_INVALID_EVENT, "OpenCL: invalid event"),
    CL_ROW(CL_INVALID_OPERATION, "OpenCL: invalid operation"),
    CL_ROW(CL_INVALID_GL_OBJECT, "OpenCL: invalid GL object"),
    CL_ROW(CL_INVALID_BUFFER_SIZE, "OpenCL: invalid buffer size"),
    CL_ROW(CL_INVALID_MIP_LEVEL, "OpenCL: invalid mip level"),
    CL_ROW(CL_INVALID_GLOBAL_WORK_SIZE, "OpenCL: invalid global work size"),
    CL_ROW(CL_INVALID_PROPERTY, "OpenCL: invalid property"),
    CL_ROW(CL_INVALID_IMAGE_DESCRIPTOR, "OpenCL: invalid image descriptor"),
    CL_ROW(CL_INVALID_COMPILER_OPTIONS, "OpenCL: invalid compiler options"),
    CL_ROW(CL_INVALID_LINKER_OPTIONS, "OpenCL: invalid linker options"),
    CL_ROW(CL_INVALID_DEVICE_PARTITION_COUNT, "OpenCL: invalid device partition count"),
};
#undef CL_ROW

static const status_row *find(clattn_status code)
{
    for (size_t i = 0; i < sizeof library_rows / sizeof library_rows[0]; i++)
        if (library_rows[i].code == code)
            return &library_rows[i];
    for (size_t i = 0; i < sizeof opencl_rows / sizeof opencl_rows[0]; i++)
        if (opencl_rows[i].code == code)
            return &opencl_rows[i];
    return NULL;
}

const char *clattn_status_name(clattn_status status)
{
    const status_row *r = find(status);
    return r ? r->name : "CLATTN_UNKNOWN_STATUS";
}

const char *clattn_status_string(clattn_status status)
{
    const status_row *r = find(status);
    return r ? r->message : "unknown status code";
}
