/*
 * Status codes of the compiled core, returned by every function that can
 * fail (the Cython wrappers turn them into MemoryError / ValueError).
 */
#ifndef TS_STATUS_H
#define TS_STATUS_H

typedef enum ts_status {
    TS_OK = 0,
    TS_NO_MEMORY = -1,    /* an allocation failed: the work is partly done */
    TS_BAD_ARGUMENT = -2, /* rejected before any work was done */
} ts_status;

#endif /* TS_STATUS_H */
