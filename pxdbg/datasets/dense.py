"""Dense ``(B, 40, 250, 768)`` uint8 event batches from a pxd-digits file, for training.

A dense event is 7.7 MB, so files are never expanded as a whole: events are read in blocks
of consecutive events (one HDF5 read per dataset), expanded batch by batch, and yielded.

Shuffling is a *buffered* shuffle, the usual compromise for compressed files: the file is
cut into buffers of ``buffer`` consecutive events, the buffer order is permuted, and the
events within each buffer are permuted. With ``buffer >= n_events`` it is a full shuffle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from ..digits import DigitsFormatError, DigitsReader, PXDDigits, digits_block_to_dense
from ..sensors import EVENT_SHAPE


def count_events(path: str | Path) -> int:
    """Number of events in a pxd-digits file."""
    with DigitsReader(path) as reader:
        return reader.n_events


def iter_dense_events(path: str | Path, *, batch: int = 1, shuffle: bool = False, seed: int | None = None,
                      buffer: int = 256, max_events: int | None = None, drop_last: bool = False,
                      reuse_output: bool = False) -> Iterator[np.ndarray]:
    """Yield ``(B, 40, 250, 768)`` uint8 ADC batches (``B == batch`` except maybe the last).

    One call is one pass (epoch) over the first ``max_events`` events; call again, e.g. with
    ``seed=base_seed + epoch``, for the next epoch. ``reuse_output=True`` yields the same
    array each time (saves allocating 7.7 MB per event; copy what you keep).
    """
    if batch < 1 or buffer < 1:
        raise ValueError("batch and buffer must be at least 1")
    rng = np.random.default_rng(seed)
    with DigitsReader(path) as reader:
        n = reader.n_events if max_events is None else min(max_events, reader.n_events)
        if n == 0:
            return
        starts = np.arange(0, n, buffer)
        if shuffle:
            rng.shuffle(starts)
        out = np.zeros((batch,) + EVENT_SHAPE, np.uint8) if reuse_output else None
        pending: list[tuple[np.ndarray, PXDDigits, np.ndarray]] = []  # (offsets, digits, order) per buffer
        queued = 0
        for b0 in starts:
            b1 = min(int(b0) + buffer, n)
            offsets, digits = reader.read_range(int(b0), b1)
            order = rng.permutation(b1 - int(b0)) if shuffle else np.arange(b1 - int(b0))
            pending.append((offsets, digits, order))
            queued += b1 - int(b0)
            while queued >= batch:
                yield _take(pending, batch, out)
                queued -= batch
        if queued and not drop_last:
            yield _take(pending, queued, None if out is None else out[:queued])


def _take(pending: list, count: int, out: np.ndarray | None) -> np.ndarray:
    """Pop ``count`` events from the front of the pending buffers and expand them."""
    parts_offsets, parts_digits = [], []
    while count:
        offsets, digits, order = pending[0]
        take, rest = order[:count], order[count:]
        sizes = np.diff(offsets)[take]
        idx = _gather_index(offsets, take)
        parts_offsets.append(sizes)
        parts_digits.append(PXDDigits(digits.sensor[idx], digits.ucell[idx], digits.vcell[idx], digits.charge[idx]))
        count -= len(take)
        if len(rest):
            pending[0] = (offsets, digits, rest)
        else:
            pending.pop(0)
    sizes = np.concatenate(parts_offsets)
    block_offsets = np.concatenate([[0], np.cumsum(sizes)])
    block = PXDDigits(*(np.concatenate([getattr(p, name) for p in parts_digits])
                        for name in ("sensor", "ucell", "vcell", "charge")))
    return digits_block_to_dense(block_offsets, block, out)


def _gather_index(offsets: np.ndarray, events: np.ndarray) -> np.ndarray:
    """Indices of the digits of ``events`` (in that order) in a block with ``offsets``."""
    lo = offsets[events]
    sizes = offsets[events + 1] - lo
    total = int(sizes.sum())
    if total == 0:
        return np.empty(0, np.int64)
    # For each digit: its event's start plus its rank within the event.
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
    return starts + np.arange(total)


def read_dense(path: str | Path, indices) -> np.ndarray:
    """Dense events at the given indices, ``(len(indices), 40, 250, 768)`` uint8."""
    with DigitsReader(path) as reader:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= reader.n_events):
            raise DigitsFormatError(f"{path}: event index out of range 0..{reader.n_events - 1}")
        out = np.zeros((len(indices),) + EVENT_SHAPE, np.uint8)
        for k, i in enumerate(indices):
            d = reader.event(int(i))
            out[k].reshape(-1)[d.pixel_key] = d.charge
        return out
