"""Background overlay: merge background digits into signal digits, event by event.

Where signal and background fire the same pixel, the charges add and saturate at 255;
every other digit of either is kept as it is. Nothing in the signal is ever dropped: the
output has a digit on every signal pixel, with at least the signal's charge. Vectorized:
one sort over the union of pixel keys per event, no loop over digits.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from . import provenance
from .digits import DigitsFormatError, DigitsReader, DigitsWriter, PXDDigits

MAX_CHARGE = 255


def overlay_event(signal: PXDDigits, background: PXDDigits) -> PXDDigits:
    """The merged digits of one event (sorted, unique per pixel)."""
    for label, digits in (("signal", signal), ("background", background)):
        try:
            digits.validate()
        except DigitsFormatError as exc:
            raise DigitsFormatError(f"{label} digits: {exc}") from None
    if len(background) == 0:
        return signal
    if len(signal) == 0:
        return background
    keys = np.concatenate([signal.pixel_key, background.pixel_key])
    charges = np.concatenate([signal.charge, background.charge]).astype(np.int64)
    union, where = np.unique(keys, return_inverse=True)
    summed = np.bincount(where, weights=charges, minlength=len(union)).astype(np.int64)
    return PXDDigits.from_pixel_key(union, np.minimum(summed, MAX_CHARGE).astype(np.uint8))


def overlay_events(signal: Iterable[PXDDigits], background: Iterable[PXDDigits], *,
                   reuse_background: bool = False) -> Iterator[PXDDigits]:
    """Stream merged events; background event i goes into signal event i.

    Running out of background raises ValueError, unless ``reuse_background`` cycles it
    (which correlates events: use only when the sample is known to be large enough).
    """
    if reuse_background:
        background = list(background) if not isinstance(background, list) else background
        if not background:
            raise ValueError("no background events to overlay")
        background = itertools.cycle(background)
    bg_iter = iter(background)
    for i, sig in enumerate(signal):
        try:
            bg = next(bg_iter)
        except StopIteration:
            raise ValueError(f"background sample ran out after {i} events; it needs at least as many "
                             "events as the signal (or reuse_background=True)") from None
        yield overlay_event(sig, bg)


def overlay_files(signal_path: str | Path, background_path: str | Path, out_path: str | Path, *,
                  reuse_background: bool = False, block: int = 64,
                  progress: Callable[[int], None] | None = None) -> int:
    """Merge two pxd-digits files into a third, streaming ``block`` events at a time.

    The output keeps the signal's (exp, run, evt) per event, records both inputs in its
    attributes and carries both inputs' provenance documents (:mod:`pxdbg.provenance`). It is written atomically (see :class:`DigitsWriter`). Returns the
    number of events. ``progress(n)`` is called after each written block.
    """
    with DigitsReader(signal_path) as sig, DigitsReader(background_path) as bg:
        if len(bg) < len(sig) and not reuse_background:
            raise ValueError(f"background {background_path} has {len(bg)} events, fewer than the "
                             f"{len(sig)} signal events (use reuse_background to cycle it)")
        if len(bg) == 0 and len(sig) > 0:
            raise ValueError(f"background {background_path} has no events")
        attrs = {"overlay_signal": str(signal_path), "overlay_background": str(background_path)}
        # The inputs' provenance travels with the merged events.
        record = provenance.for_overlay(provenance.read(sig), provenance.read(bg),
                                        signal_file=Path(signal_path).name, background_file=Path(background_path).name)
        bg_events = (bg.iter_events(block=block) if not reuse_background
                     else _cycle_reader(bg, block))
        merged = overlay_events(sig.iter_events(block=block), bg_events)
        with DigitsWriter(out_path, attrs=attrs) as out:
            provenance.write(out, record)
            for start in range(0, len(sig), block):
                stop = min(start + block, len(sig))
                events = list(itertools.islice(merged, stop - start))
                out.append_many(events, exp=sig.exp[start:stop], run=sig.run[start:stop],
                                evt=sig.evt[start:stop])
                if progress is not None:
                    progress(len(events))
            return out.n_events


def _cycle_reader(reader: DigitsReader, block: int) -> Iterator[PXDDigits]:
    while True:
        yield from reader.iter_events(block=block)
