/*
 * Running a few tasks at once on threads created for the call.
 *
 * The kernels split their work into one task per thread (a share of the rows,
 * or a set of shards) and run them with ts_run_tasks: task 0 on the calling
 * thread, the others on new POSIX threads, all joined before it returns.
 * There is no persistent pool, so nothing outlives a call: nothing to shut
 * down, and nothing a fork() could copy in a half-finished state.  Creating
 * a thread costs tens of microseconds, against milliseconds for a task.
 */
#ifndef TS_THREADS_H
#define TS_THREADS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Threads one call may use; callers clamp their thread counts to it. */
#define TS_MAX_THREADS 256

typedef void (*ts_task_fn)(void *task);

typedef struct {
    ts_task_fn run;
    void *task;
} ts_thread_start;

static void *ts_thread_main(void *start)
{
    const ts_thread_start *s = (const ts_thread_start *)start;
    s->run(s->task);
    return NULL;
}

/* Runs run(tasks + i * task_size) for i in [0, n) (n <= TS_MAX_THREADS) and
 * returns once all are done.  A task whose thread cannot be created runs on
 * the calling thread instead: fewer threads, same result. */
static void ts_run_tasks(ts_task_fn run, void *tasks, size_t task_size, int n)
{
    pthread_t threads[TS_MAX_THREADS];
    ts_thread_start starts[TS_MAX_THREADS];
    int started[TS_MAX_THREADS];
    char *const base = (char *)tasks;
    for (int i = 1; i < n; ++i) {
        starts[i].run = run;
        starts[i].task = base + (size_t)i * task_size;
        started[i] = pthread_create(&threads[i], NULL, ts_thread_main, &starts[i]) == 0;
    }
    if (n > 0) run(base);
    for (int i = 1; i < n; ++i) {
        if (started[i])
            pthread_join(threads[i], NULL);
        else
            run(base + (size_t)i * task_size);
    }
}

/* First row of share `share` of `shares` equal shares of rows [begin, end). */
static inline int64_t ts_share_start(int64_t begin, int64_t end, int share, int shares)
{
    return begin + (end - begin) * share / shares;
}

#endif /* TS_THREADS_H */
