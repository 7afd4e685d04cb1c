/* A call's plan: its steps prepared, then enqueued in order, then released (see plan.h). */
#include "plan.h"

#include <stdlib.h>
#include <string.h>

void clattn__plan_init(clattn_plan *p, clattn_context *ctx)
{
    memset(p, 0, sizeof *p);
    p->ctx = ctx;
}

clattn_status clattn__plan_begin(clattn_plan *p, clattn_context *ctx, cl_command_queue queue,
                                 cl_uint num_wait, const cl_event *wait_list)
{
    clattn__plan_init(p, ctx);
    const clattn_status st = clattn__check_call(ctx, queue, num_wait, wait_list);
    if (st == CL_SUCCESS)
        p->queue = queue;
    return st;
}

/* A new zeroed step at the end, or NULL when memory runs out. */
static clattn_step *append(clattn_plan *p)
{
    if (p->count == p->cap) {
        const size_t ncap = p->cap ? p->cap * 2 : 8;
        clattn_step *ns = realloc(p->steps, ncap * sizeof *ns);
        if (!ns)
            return NULL;
        p->steps = ns;
        p->cap = ncap;
    }
    clattn_step *s = &p->steps[p->count];
    memset(s, 0, sizeof *s);
    return s;
}

clattn_status clattn__plan_kernel(clattn_plan *p, const char *file, const char *options,
                                  const char *kernel, const clattn_kargs *args, cl_uint dims,
                                  const size_t *global, const size_t *local)
{
    clattn_step *s = append(p);
    if (!s)
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    s->kind = CLATTN_STEP_KERNEL;
    clattn_status st = clattn__launch_prepare(p->ctx, file, options, kernel, args, dims, global,
                                              local, &s->launch);
    if (st == CL_SUCCESS)
        p->count++;
    return st;
}

clattn_status clattn__plan_gemm(clattn_plan *p, size_t d0, size_t d1, float alpha,
                                const clattn_operand *A, const clattn_operand *B, float beta,
                                const clattn_operand *C)
{
    clattn_step *s = append(p);
    if (!s)
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    s->kind = CLATTN_STEP_GEMM;
    clattn_status st = clattn__gemm_prepare(p->ctx, p->queue, p, d0, d1, alpha, A, B, beta, C,
                                            &s->gemm);
    if (st == CL_SUCCESS)
        p->count++;
    return st;
}

void clattn__pool_clear(clattn_buffer_pool *pool)
{
    for (size_t i = 0; i < pool->count; i++)
        clReleaseMemObject(pool->buffers[i]);
    if (pool->last)
        clReleaseEvent(pool->last);
    memset(pool, 0, sizeof *pool);
}

size_t clattn__pool_bytes(const clattn_buffer_pool *pool)
{
    size_t n = 0;
    for (size_t i = 0; i < pool->count; i++)
        n += pool->bytes[i];
    return n;
}

/* A buffer of the pool's of exactly `bytes` that this call has not taken yet, retained for it. */
static bool take_from_pool(clattn_plan *p, size_t bytes, cl_mem *out)
{
    clattn_buffer_pool *pool = p->pool;
    /* The last call's wait list failed: its work may still run late (products on a library
     * queue), and a command waiting for its failed event would never run on PoCL 3.1. Its
     * buffers are left to it. */
    cl_int status;
    if (pool && pool->last && !p->took_any &&
        (clGetEventInfo(pool->last, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status, &status, NULL) != CL_SUCCESS ||
         status < 0))
        clattn__pool_clear(pool);
    for (size_t i = 0; pool && i < pool->count; i++) {
        if (!p->taken[i] && pool->bytes[i] == bytes && clRetainMemObject(pool->buffers[i]) == CL_SUCCESS) {
            p->taken[i] = p->took_any = true;
            p->buffer_bytes[p->num_buffers] = bytes;
            p->buffers[p->num_buffers++] = *out = pool->buffers[i];
            return true;
        }
    }
    return false;
}

static clattn_status new_buffer(clattn_plan *p, size_t bytes, const void *host, cl_mem *out)
{
    if (p->num_buffers == CLATTN_PLAN_MAX_BUFFERS)
        return CLATTN_ERROR_INTERNAL;
    if (!host && take_from_pool(p, bytes, out))
        return CL_SUCCESS;
    if (bytes > p->ctx->info.max_mem_alloc_size)
        return CLATTN_ERROR_ALLOCATION_TOO_LARGE;
    cl_int err;
    cl_mem m = clCreateBuffer(p->ctx->context,
                              CL_MEM_READ_WRITE | (host ? CL_MEM_COPY_HOST_PTR : 0), bytes,
                              (void *)host, &err);
    if (err != CL_SUCCESS)
        return err;
    p->buffer_bytes[p->num_buffers] = host ? 0 : bytes;
    p->buffers[p->num_buffers++] = m;
    *out = m;
    return CL_SUCCESS;
}

clattn_status clattn__plan_buffer(clattn_plan *p, size_t bytes, cl_mem *out)
{
    return new_buffer(p, bytes, NULL, out);
}

clattn_status clattn__plan_buffer_copy(clattn_plan *p, size_t bytes, const void *host, cl_mem *out)
{
    return new_buffer(p, bytes, host, out);
}

void clattn__plan_keep_buffer(clattn_plan *p, cl_mem m)
{
    for (size_t i = 0; i < p->num_buffers; i++) {
        if (p->buffers[i] == m) {
            --p->num_buffers;
            p->buffers[i] = p->buffers[p->num_buffers];
            p->buffer_bytes[i] = p->buffer_bytes[p->num_buffers];
        }
    }
}

/* The events of one call: released together once the last has ended. */
static void CL_CALLBACK release_kept(cl_event e, cl_int status, void *data)
{
    (void)e, (void)status;
    clattn_events *k = data;
    for (size_t i = 0; i < k->n; i++)
        clReleaseEvent(k->ev[i]);
    free(k);
}

/* Hands the kept events to a callback on `last` (one of them), or releases them now when there
 * is none or no callback can be set. PoCL 3.1 calls no callback on an event that fails: a call
 * whose wait list fails keeps its events (a few hundred bytes) for the life of the process. */
static void keep_until(clattn_events *k, cl_event last)
{
    if (!last || clSetEventCallback(last, CL_COMPLETE, release_kept, k) != CL_SUCCESS)
        release_kept(NULL, CL_COMPLETE, k);
}

clattn_status clattn__plan_enqueue(clattn_plan *p, cl_command_queue queue, cl_uint num_wait,
                                   const cl_event *wait_list, cl_event *event_out)
{
    /* An event of the wait list that has already failed is refused as clWaitForEvents does,
     * checked here rather than at the call's start because planning may take seconds (builds):
     * a command behind a failed event never runs on PoCL 3.1. Nothing is enqueued yet. */
    clattn_status st = CL_SUCCESS;
    for (cl_uint i = 0; i < num_wait && st == CL_SUCCESS; i++) {
        cl_int status;
        if (clGetEventInfo(wait_list[i], CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status, &status,
                           NULL) != CL_SUCCESS)
            st = CL_INVALID_EVENT_WAIT_LIST;
        else if (status < 0)
            st = CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST;
    }
    if (st != CL_SUCCESS)
        return st;
    /* Room for every event the steps can make, before anything is enqueued. */
    size_t cap = 1; /* a final marker */
    for (size_t i = 0; i < p->count; i++)
        cap += p->steps[i].kind == CLATTN_STEP_KERNEL ? 1 : clattn__gemm_event_count(&p->steps[i].gemm);
    clattn_events *kept = malloc(sizeof *kept + cap * sizeof kept->ev[0]);
    if (!kept)
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    kept->n = 0;
    kept->cap = cap;

    /* Each step waits for the one before; the first for the caller's list. */
    cl_uint nw = num_wait;
    const cl_event *wl = wait_list;
    cl_event prev = NULL, last = NULL;
    for (size_t i = 0; i < p->count && st == CL_SUCCESS; i++) {
        clattn_step *s = &p->steps[i];
        cl_event done = NULL;
        if (s->kind == CLATTN_STEP_KERNEL) {
            st = clattn__launch_enqueue(queue, &s->launch, nw, wl, &done);
            clattn__events_keep(kept, st == CL_SUCCESS ? done : NULL);
        } else {
            st = clattn__gemm_enqueue(p->ctx, queue, &s->gemm, nw, wl, kept, &done);
        }
        if (kept->n > 0)
            last = kept->ev[kept->n - 1];
        if (st == CL_SUCCESS && done) { /* a step with no work leaves the next waiting as it did */
            prev = done;
            nw = 1;
            wl = &prev;
        }
    }
    if (st == CL_SUCCESS && event_out && !prev) { /* no step had work: a marker, kept too */
        st = clEnqueueMarkerWithWaitList(queue, nw, wl, &prev);
        clattn__events_keep(kept, st == CL_SUCCESS ? prev : NULL);
        if (st != CL_SUCCESS)
            prev = NULL;
    }
    cl_event handed = NULL;
    if (st == CL_SUCCESS && event_out) {
        if (clRetainEvent(prev) == CL_SUCCESS)
            *event_out = prev;
        else /* everything is enqueued: the caller gets the kept reference rather than an error */
            handed = prev;
    }
    if (handed) /* out of the kept list, whose callback may free it at once once set */
        for (size_t i = 0; i < kept->n; i++)
            if (kept->ev[i] == handed)
                kept->ev[i] = kept->ev[--kept->n];
    /* After a failed enqueue, what was enqueued may still run: its events wait for its end. */
    keep_until(kept, st == CL_SUCCESS && prev ? prev : last);
    if (handed) /* after the callback is set: OpenCL keeps an event until its command ends */
        *event_out = handed;
    return st;
}

void clattn__plan_release(clattn_plan *p)
{
    for (size_t i = 0; i < p->count; i++) {
        if (p->steps[i].kind == CLATTN_STEP_KERNEL)
            clattn__launch_release(p->ctx, &p->steps[i].launch);
        else
            clattn__gemm_release(&p->steps[i].gemm);
    }
    free(p->steps);
    for (size_t i = 0; i < p->num_buffers; i++)
        clReleaseMemObject(p->buffers[i]);
    memset(p, 0, sizeof *p);
}

clattn_status clattn__plan_run_own(clattn_plan *p, clattn_status st)
{
    cl_command_queue q;
    if (st == CL_SUCCESS && (st = clattn__own_queue_begin(p->ctx, &q)) == CL_SUCCESS) {
        st = clattn__plan_enqueue(p, q, 0, NULL, NULL);
        const cl_int done = clFinish(q); /* what was enqueued, even after a failed enqueue */
        if (st == CL_SUCCESS)
            st = done;
        clattn__own_queue_end(p->ctx);
    }
    if (st == CL_SUCCESS && p->commit)
        p->commit(p, p->commit_arg);
    clattn__plan_release(p);
    return st;
}

/* After the call's enqueue: the pool holds the buffers this call used, and its last event. */
static void pool_commit(clattn_plan *p, cl_event last)
{
    clattn_buffer_pool kept = {.last = last};
    for (size_t i = 0; i < p->num_buffers; i++) {
        if (p->buffer_bytes[i] && clRetainMemObject(p->buffers[i]) == CL_SUCCESS) {
            kept.buffers[kept.count] = p->buffers[i];
            kept.bytes[kept.count++] = p->buffer_bytes[i];
        }
    }
    clattn__pool_clear(p->pool);
    *p->pool = kept;
}

/* A plan with a pool: its first step also waits for the pool's last call when it reuses its
 * buffers, and its last event is kept. */
static clattn_status pooled_enqueue(clattn_plan *p, cl_command_queue queue, cl_uint num_wait,
                                    const cl_event *wait_list, cl_event *event_out)
{
    cl_event stack[8], *waits = stack, last = NULL;
    const bool wait_last = p->took_any && p->pool->last;
    const cl_uint nw = num_wait + (wait_last ? 1 : 0);
    if (nw > sizeof stack / sizeof stack[0] && !(waits = malloc(nw * sizeof *waits)))
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    if (num_wait)
        memcpy(waits, wait_list, num_wait * sizeof *waits);
    if (wait_last)
        waits[num_wait] = p->pool->last;
    clattn_status st = clattn__plan_enqueue(p, queue, nw, nw ? waits : NULL, &last);
    if (waits != stack)
        free(waits);
    if (st != CL_SUCCESS) {
        if (p->took_any) /* what was enqueued may still use them */
            clattn__pool_clear(p->pool);
        return st;
    }
    if (!event_out) {
        pool_commit(p, last);
    } else if (clRetainEvent(last) == CL_SUCCESS) {
        pool_commit(p, last);
        *event_out = last;
    } else { /* everything is enqueued: the caller gets the event, the pool starts afresh */
        clattn__pool_clear(p->pool);
        *event_out = last;
    }
    return CL_SUCCESS;
}

clattn_status clattn__plan_run(clattn_plan *p, clattn_status st, cl_command_queue queue,
                               cl_uint num_wait, const cl_event *wait_list, cl_event *event_out)
{
    if (st == CL_SUCCESS)
        st = p->pool ? pooled_enqueue(p, queue, num_wait, wait_list, event_out)
                     : clattn__plan_enqueue(p, queue, num_wait, wait_list, event_out);
    if (st == CL_SUCCESS && p->commit)
        p->commit(p, p->commit_arg);
    clattn__plan_release(p);
    return st;
}
