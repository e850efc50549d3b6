/*
 * Memory for tables and scratch: huge-page blocks, and caches of freed ones.
 *
 * Fresh memory costs a page fault per 4 KiB page (the kernel zeroes each
 * page on first touch).  For tables that grow in many steps, or are built
 * anew every epoch, and for the scratch of every counting call, that costs
 * more than the counting itself; a reused block costs at most a memset.  So
 * freed blocks are kept in a cache (ts_cache), one list per power-of-two
 * size, up to a byte limit: ts_slot_cache for the slot arrays of hash
 * tables, ts_scratch_cache for the scratch of partitioning (ts_batch.h),
 * ts_dense_cache for dense tables (ts_dense.h).
 *
 * The caches are shared by every thread and guarded by a mutex each.  A
 * child forked while another thread held one would wait for it forever, so
 * ts_register_fork_handlers (called once, at import) makes fork() take every
 * lock first and release them in parent and child.
 */
#ifndef TS_ALLOC_H
#define TS_ALLOC_H

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define TS_HUGE_PAGE ((size_t)1 << 21)

/* Memory for `bytes`, not zeroed.  Large blocks are aligned to 2 MiB and
 * marked for huge pages: tables are written at random slots, scratch in
 * hundreds of streams, and with 4 KiB pages most of those writes would miss
 * the TLB on top of the cache. */
static void *ts_alloc(size_t bytes)
{
    if (bytes < TS_HUGE_PAGE) return malloc(bytes);
    void *memory = NULL;
    if (posix_memalign(&memory, TS_HUGE_PAGE, bytes) != 0) return NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(memory, bytes, MADV_HUGEPAGE);
#endif
    return memory;
}

/* Memory for `bytes`, zeroed by writing it.  Not calloc: it leaves fresh
 * pages to the kernel, and a table's slots are read before they are written.
 * The first read of such a page maps the shared zero page, the first write
 * then copies it and flushes the TLB of every CPU the process runs on (an
 * interprocessor interrupt, costly in a virtual machine: resizing the tables
 * of a 64-channel layer spent half its time there).  A written page is
 * faulted in once, already the process's own. */
static void *ts_alloc_zeroed(size_t bytes)
{
    void *memory = ts_alloc(bytes);
    if (memory != NULL) memset(memory, 0, bytes);
    return memory;
}

#define TS_CACHE_CLASSES 64

typedef struct {
    pthread_mutex_t lock;
    void *head[TS_CACHE_CLASSES]; /* per log2(size): each free block starts with the next */
    int64_t bytes;                /* held in all lists */
    int64_t limit;                /* bytes held at most; a block beyond it is freed */
} ts_cache;

static ts_cache ts_slot_cache = {PTHREAD_MUTEX_INITIALIZER, {NULL}, 0, (int64_t)64 << 20};
/* Enough for the scratch of 32 partitioning threads (8 MiB each). */
static ts_cache ts_scratch_cache = {PTHREAD_MUTEX_INITIALIZER, {NULL}, 0, (int64_t)256 << 20};
/* Dense tables (ts_dense.h): a counter of a 20-neuron layer with 10 labels
 * takes 11 of 8 MiB each, anew every epoch. */
static ts_cache ts_dense_cache = {PTHREAD_MUTEX_INITIALIZER, {NULL}, 0, (int64_t)128 << 20};

/* The size class of a block of `bytes`: log2 of the power of two it is
 * rounded up to (so a block of a class fits any request of it), at least 8
 * bytes: a free block in a cache holds the pointer to the next one. */
static inline int ts_cache_class(size_t bytes)
{
    return bytes <= sizeof(void *) ? 3 : 64 - __builtin_clzll((unsigned long long)(bytes - 1));
}

/* A block of at least `bytes` (> 0) from the cache, or fresh; zeroed if
 * asked.  Give it back with ts_cache_release and the same `bytes`. */
static void *ts_cache_take(ts_cache *cache, size_t bytes, int zeroed)
{
    const int cls = ts_cache_class(bytes);
    const size_t size = (size_t)1 << cls;
    pthread_mutex_lock(&cache->lock);
    void *block = cache->head[cls];
    if (block != NULL) {
        memcpy(&cache->head[cls], block, sizeof(void *));
        cache->bytes -= (int64_t)size;
    }
    pthread_mutex_unlock(&cache->lock);
    if (block == NULL) return zeroed ? ts_alloc_zeroed(size) : ts_alloc(size);
    if (zeroed) memset(block, 0, size);
    return block;
}

/* Keeps `block` (taken for `bytes`; may be NULL) for reuse, or frees it
 * when the cache is full. */
static void ts_cache_release(ts_cache *cache, void *block, size_t bytes)
{
    if (block == NULL) return;
    const int cls = ts_cache_class(bytes);
    const int64_t size = (int64_t)1 << cls;
    pthread_mutex_lock(&cache->lock);
    const int keep = cache->bytes + size <= cache->limit;
    if (keep) {
        memcpy(block, &cache->head[cls], sizeof(void *));
        cache->head[cls] = block;
        cache->bytes += size;
    }
    pthread_mutex_unlock(&cache->lock);
    if (!keep) free(block);
}

static void ts_caches_lock(void)
{
    pthread_mutex_lock(&ts_slot_cache.lock);
    pthread_mutex_lock(&ts_scratch_cache.lock);
    pthread_mutex_lock(&ts_dense_cache.lock);
}

static void ts_caches_unlock(void)
{
    pthread_mutex_unlock(&ts_dense_cache.lock);
    pthread_mutex_unlock(&ts_scratch_cache.lock);
    pthread_mutex_unlock(&ts_slot_cache.lock);
}

/* Returns 0, or an error number of pthread_atfork. */
static int ts_register_fork_handlers(void)
{
    return pthread_atfork(ts_caches_lock, ts_caches_unlock, ts_caches_unlock);
}

#endif /* TS_ALLOC_H */
