"""PXD digits in memory and in the ``pxd-digits`` version 1 HDF5 exchange format.

In memory an event is either dense, a ``(40, 250, 768)`` uint8 array of ADC values, or
sparse, a :class:`PXDDigits` (one entry per fired pixel, sorted by sensor, u, v). The
conversions are vectorized: no Python loop runs per digit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import numpy as np

from .sensors import EVENT_SHAPE, N_SENSORS, N_UCELLS, N_VCELLS, SENSOR_IDS

FORMAT_NAME = "pxd-digits"
FORMAT_VERSION = 1

_PIXELS_PER_SENSOR = N_UCELLS * N_VCELLS


class DigitsFormatError(ValueError):
    """A file or array that is not valid pxd-digits data."""


@dataclass
class PXDDigits:
    """The fired pixels of one event, sorted by (sensor, ucell, vcell), unique per pixel."""

    sensor: np.ndarray  # uint8, 0..39
    ucell: np.ndarray  # uint16, 0..249
    vcell: np.ndarray  # uint16, 0..767
    charge: np.ndarray  # uint8, 1..255

    def __len__(self) -> int:
        return int(self.sensor.shape[0])

    @classmethod
    def empty(cls) -> "PXDDigits":
        return cls(
            np.empty(0, np.uint8), np.empty(0, np.uint16), np.empty(0, np.uint16), np.empty(0, np.uint8)
        )

    @property
    def layer_ladder_sensor(self) -> np.ndarray:
        """``(n, 3)`` uint8 array of the (layer, ladder, sensor) triple of each digit."""
        return SENSOR_IDS[self.sensor]

    @property
    def pixel_key(self) -> np.ndarray:
        """A unique, order-preserving int64 key per pixel: sensor, then u, then v."""
        return (self.sensor.astype(np.int64) * N_UCELLS + self.ucell) * N_VCELLS + self.vcell

    @classmethod
    def from_pixel_key(cls, key: np.ndarray, charge: np.ndarray) -> "PXDDigits":
        sensor, rest = np.divmod(key, _PIXELS_PER_SENSOR)
        ucell, vcell = np.divmod(rest, N_VCELLS)
        return cls(
            sensor.astype(np.uint8), ucell.astype(np.uint16), vcell.astype(np.uint16),
            np.asarray(charge, dtype=np.uint8),
        )

    def validate(self) -> None:
        n = len(self)
        for name in ("ucell", "vcell", "charge"):
            if getattr(self, name).shape != (n,):
                raise DigitsFormatError(f"digit arrays differ in length ({name})")
        if n == 0:
            return
        if self.sensor.max() >= N_SENSORS:
            raise DigitsFormatError(f"sensor index out of range 0..{N_SENSORS - 1}")
        if self.ucell.max() >= N_UCELLS or self.vcell.max() >= N_VCELLS:
            raise DigitsFormatError("u or v cell out of range")
        if self.charge.min() == 0:
            raise DigitsFormatError("digits with zero charge are not allowed")
        key = self.pixel_key
        if np.any(np.diff(key) <= 0):
            raise DigitsFormatError("digits must be unique per pixel and sorted by (sensor, ucell, vcell)")


def dense_to_digits(event: np.ndarray) -> PXDDigits:
    """Fired pixels of one dense ``(40, 250, 768)`` event. C order gives the sort for free."""
    if event.shape != EVENT_SHAPE:
        raise DigitsFormatError(f"a dense event has shape {EVENT_SHAPE}, got {event.shape}")
    flat = np.ascontiguousarray(event, dtype=np.uint8).reshape(-1)
    key = np.flatnonzero(flat)
    return PXDDigits.from_pixel_key(key, flat[key])


def digits_block_to_dense(offsets: np.ndarray, digits: PXDDigits, out: np.ndarray | None = None) -> np.ndarray:
    """Dense ``(n, 40, 250, 768)`` uint8 events of a block of ``n = len(offsets) - 1`` events
    whose digits are concatenated (event j owns ``digits[offsets[j]:offsets[j + 1]]``)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(offsets) - 1
    shape = (n,) + EVENT_SHAPE
    if out is None:
        out = np.zeros(shape, dtype=np.uint8)
    else:
        if out.shape != shape or out.dtype != np.uint8:
            raise ValueError(f"out must be uint8 of shape {shape}, got {out.dtype} {out.shape}")
        out.fill(0)
    event = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    out.reshape(-1)[event * (N_SENSORS * _PIXELS_PER_SENSOR) + digits.pixel_key] = digits.charge
    return out


def digits_to_dense(digits: PXDDigits, out: np.ndarray | None = None) -> np.ndarray:
    """The dense ``(40, 250, 768)`` uint8 event of a digit list."""
    if out is None:
        out = np.zeros(EVENT_SHAPE, dtype=np.uint8)
    else:
        out.fill(0)
    out.reshape(-1)[digits.pixel_key] = digits.charge
    return out


# ----------------------------------------------------------------------------------------
# HDF5 files


_DATASETS = {"sensor": np.uint8, "ucell": np.uint16, "vcell": np.uint16, "charge": np.uint8}
_EVENT_DATASETS = {"exp": np.int32, "run": np.int32, "evt": np.int64}


class DigitsWriter:
    """Append events to a new pxd-digits file. Writes to ``<path>.tmp`` and renames on
    close, so a crashed job never leaves a file that looks complete."""

    def __init__(self, path: str | Path, *, attrs: dict | None = None, chunk: int = 1 << 16):
        self.path = Path(path)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._file = h5py.File(self._tmp, "w")
        self._file.attrs["format"] = FORMAT_NAME
        self._file.attrs["version"] = FORMAT_VERSION
        self._file.attrs["n_events"] = 0
        for key, value in (attrs or {}).items():
            self._file.attrs[key] = value
        for name, dtype in _DATASETS.items():
            self._file.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(chunk,),
                                      compression="gzip", compression_opts=1, shuffle=True)
        for name, dtype in _EVENT_DATASETS.items():
            self._file.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(4096,))
        self._file.create_dataset("event_offsets", data=np.zeros(1, np.int64), maxshape=(None,), chunks=(4096,))
        self._n_events = 0
        self._n_digits = 0

    @property
    def n_events(self) -> int:
        return self._n_events

    def append(self, digits: PXDDigits, *, exp: int = 0, run: int = 0, evt: int | None = None) -> None:
        self.append_many([digits], exp=[exp], run=[run], evt=None if evt is None else [evt])

    def append_many(self, events: Iterable[PXDDigits], *, exp: Iterable[int], run: Iterable[int],
                    evt: Iterable[int] | None = None) -> None:
        events = list(events)
        if not events:
            return
        exp, run = np.asarray(list(exp), np.int32), np.asarray(list(run), np.int32)
        evt = (np.arange(self._n_events, self._n_events + len(events), dtype=np.int64)
               if evt is None else np.asarray(list(evt), np.int64))
        if not (len(exp) == len(run) == len(evt) == len(events)):
            raise ValueError("exp, run and evt need one value per event")
        sizes = np.array([len(d) for d in events], dtype=np.int64)
        offsets = self._n_digits + np.cumsum(sizes)
        total = int(sizes.sum())
        for name in _DATASETS:
            ds = self._file[name]
            ds.resize((self._n_digits + total,))
            if total:
                ds[self._n_digits:] = np.concatenate([getattr(d, name) for d in events])
        for name, values in (("exp", exp), ("run", run), ("evt", evt)):
            ds = self._file[name]
            ds.resize((self._n_events + len(events),))
            ds[self._n_events:] = values
        ds = self._file["event_offsets"]
        ds.resize((self._n_events + len(events) + 1,))
        ds[self._n_events + 1:] = offsets
        self._n_events += len(events)
        self._n_digits += total

    def set_attrs(self, **attrs) -> None:
        """Add or replace file attributes (e.g. statistics known only at the end)."""
        if self._file is None:
            raise ValueError("the writer is closed")
        for key, value in attrs.items():
            self._file.attrs[key] = value

    def set_document(self, name: str, text: str) -> None:
        """Store a text document (e.g. JSON provenance) as the scalar string dataset
        ``name``; datasets, unlike attributes, have no 64 KiB size limit."""
        if self._file is None:
            raise ValueError("the writer is closed")
        if name in _DATASETS or name in _EVENT_DATASETS or name == "event_offsets":
            raise ValueError(f"{name!r} is a pxd-digits dataset, not a document")
        if name in self._file:
            del self._file[name]
        self._file.create_dataset(name, data=text, dtype=h5py.string_dtype("utf-8"))

    def close(self) -> None:
        if self._file is None:
            return
        self._file.attrs["n_events"] = self._n_events
        self._file.close()
        self._file = None
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "DigitsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class DigitsReader:
    """Random access and streaming over a pxd-digits file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r")
        except (OSError, FileNotFoundError) as exc:
            raise DigitsFormatError(f"{self.path}: not a readable HDF5 file ({exc})") from exc
        attrs = self._file.attrs
        fmt = attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt != FORMAT_NAME:
            self._file.close()
            raise DigitsFormatError(f"{self.path}: not a pxd-digits file (format attribute {fmt!r})")
        if int(attrs.get("version", -1)) != FORMAT_VERSION:
            self._file.close()
            raise DigitsFormatError(f"{self.path}: unsupported pxd-digits version {attrs.get('version')!r}")
        self.offsets = self._file["event_offsets"][:]
        self.n_events = len(self.offsets) - 1
        self.exp = self._file["exp"][:]
        self.run = self._file["run"][:]
        self.evt = self._file["evt"][:]
        self.attrs = dict(attrs)

    def __len__(self) -> int:
        return self.n_events

    def event(self, i: int) -> PXDDigits:
        if not 0 <= i < self.n_events:
            raise IndexError(f"event {i} out of range 0..{self.n_events - 1}")
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return PXDDigits(*(self._file[name][lo:hi] for name in _DATASETS))

    __getitem__ = event

    def iter_events(self, start: int = 0, stop: int | None = None, *, block: int = 64) -> Iterator[PXDDigits]:
        """Stream events, reading ``block`` events per HDF5 read so large files stay cheap."""
        stop = self.n_events if stop is None else min(stop, self.n_events)
        for b0 in range(start, stop, block):
            b1 = min(b0 + block, stop)
            lo, hi = int(self.offsets[b0]), int(self.offsets[b1])
            arrays = [self._file[name][lo:hi] for name in _DATASETS]
            for i in range(b0, b1):
                a, b = int(self.offsets[i]) - lo, int(self.offsets[i + 1]) - lo
                yield PXDDigits(*(arr[a:b] for arr in arrays))

    __iter__ = iter_events

    def read_range(self, start: int, stop: int) -> tuple[np.ndarray, PXDDigits]:
        """Events ``[start, stop)`` in one HDF5 read per dataset.

        Returns ``(offsets, digits)``: ``digits`` concatenates the events' digits and event
        ``start + j`` owns ``digits[offsets[j]:offsets[j + 1]]`` (``offsets[0] == 0``).
        Cheaper than :meth:`iter_events` when a caller works on whole blocks anyway.
        """
        if not 0 <= start <= stop <= self.n_events:
            raise IndexError(f"event range [{start}, {stop}) outside 0..{self.n_events}")
        lo, hi = int(self.offsets[start]), int(self.offsets[stop])
        digits = PXDDigits(*(self._file[name][lo:hi] for name in _DATASETS))
        return self.offsets[start:stop + 1] - lo, digits

    def dense(self, i: int) -> np.ndarray:
        return digits_to_dense(self.event(i))

    def document(self, name: str) -> str | None:
        """The text document stored as dataset ``name`` (see DigitsWriter.set_document),
        or None when the file has none."""
        if name not in self._file:
            return None
        value = self._file[name][()]
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "DigitsReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
