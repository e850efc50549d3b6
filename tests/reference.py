"""Independent plain-NumPy references the tests compare against."""

import numpy as np


def packed_states(x, neuron_axis=-1):
    """np.packbits of (x > 0) with neurons last, one row per state."""
    x = np.asarray(x)
    moved = np.moveaxis(x, neuron_axis, -1)
    fired = moved.reshape(-1, moved.shape[-1]) > 0
    return np.packbits(fired, axis=-1, bitorder="little")


def unique_counts(packed):
    """Distinct rows and their counts, sorted by the rows' bytes."""
    if len(packed) == 0:
        return packed, np.zeros(0, dtype=np.int64)
    return np.unique(packed, axis=0, return_counts=True)


def renyi_entropy(counts, alpha):
    p = np.asarray(counts, dtype=np.float64)
    p = p / p.sum()
    if alpha == 1:
        return float(-np.sum(p * np.log2(p)))
    if alpha == 0:
        return float(np.log2(len(p)))
    if np.isinf(alpha):
        return float(-np.log2(p.max()))
    return float(np.log2(np.sum(p**alpha)) / (1 - alpha))


def sorted_rows(keys, counts):
    """(keys, counts) in a canonical order, for comparing tables."""
    order = np.lexsort(keys.T[::-1]) if len(keys) else np.zeros(0, dtype=np.int64)
    return keys[order], np.asarray(counts)[order]
