/* The events a call creates, kept until its last one has completed (plan.c says why). */
#ifndef CLATTN_EVENTS_H
#define CLATTN_EVENTS_H
#include <CL/cl.h>
#include <stddef.h>

typedef struct clattn_events {
    size_t n, cap; /* sized before the first enqueue: keeping never allocates */
    cl_event ev[];  /* one allocation with the struct */
} clattn_events;

/* Takes over the reference to e (NULL: nothing). */
static inline void clattn__events_keep(clattn_events *k, cl_event e)
{
    if (e && k->n < k->cap)
        k->ev[k->n++] = e;
    else if (e)
        clReleaseEvent(e); /* not reached: the capacity counts every event a plan makes */
}

#endif
