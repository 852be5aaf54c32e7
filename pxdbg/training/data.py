"""Training data: events of a pxd-digits file as model-space tensors.

An event is 40 sensor images in the canonical basf2 sensor order (:mod:`pxdbg.sensors`):
image i is sensor index i and carries class label i. The order comes from the sensor
index stored with every digit, never from sorting names: sorting sensor names (or the
per-sensor folders of the public IEA-GAN loader) lexicographically puts "2.10.1" before
"2.2.1" and scrambles the layer-2 labels.

Images are built on demand from the sparse digits (a dense event is 7.7 MB; a training
sample of a few hundred events would not fit comfortably in memory as dense arrays), then
padded and log-scaled with :func:`pxdbg.transforms.adc_to_model`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ..digits import DigitsReader
from ..sensors import N_SENSORS, N_UCELLS, N_VCELLS
from ..transforms import adc_to_model

#: Class label of image i of an event: its sensor index.
SENSOR_LABELS = np.arange(N_SENSORS)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file (the training dataset reference in a manifest)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


class TrainingSample:
    """Random access to the events of a pxd-digits training file.

    ``max_events`` uses only the first events of the file (small test runs).
    """

    def __init__(self, path: str | Path, *, max_events: int | None = None):
        self.path = Path(path)
        self._reader = DigitsReader(self.path)
        n = self._reader.n_events if max_events is None else min(max_events, self._reader.n_events)
        if n < 1:
            self._reader.close()
            raise ValueError(f"{self.path}: the training sample has no events")
        self.n_events = n
        self._sha256: str | None = None

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = file_sha256(self.path)
        return self._sha256

    @property
    def synthetic(self) -> bool:
        """True for a sample written by :mod:`pxdbg.datasets.synthetic` (a stand-in, not
        physics): a model trained on it must say so in its manifest."""
        generator = self._reader.attrs.get("generator")
        if isinstance(generator, bytes):
            generator = generator.decode("utf-8", "replace")
        return generator == "pxdbg.datasets.synthetic"

    def reference(self) -> str:
        """``"<file name> sha256:<hex>"``: what a manifest records as the training dataset."""
        return f"{self.path.name} sha256:{self.sha256}"

    def adc_images(self, event: int, sensors: np.ndarray | None = None) -> np.ndarray:
        """uint8 ``(k, 250, 768)`` images of the given sensors of one event (all 40 in
        canonical order when ``sensors`` is None)."""
        if not 0 <= event < self.n_events:
            raise IndexError(f"event {event} out of range 0..{self.n_events - 1}")
        sensors = SENSOR_LABELS if sensors is None else np.asarray(sensors, dtype=np.int64)
        digits = self._reader.event(event)
        out = np.zeros((len(sensors), N_UCELLS, N_VCELLS), dtype=np.uint8)
        # Row j of the output shows sensor sensors[j]: map each digit to the rows that want it.
        row_of_sensor = np.full(N_SENSORS, -1, dtype=np.int64)
        if len(np.unique(sensors)) != len(sensors):
            raise ValueError("each sensor may be requested once per call")
        row_of_sensor[sensors] = np.arange(len(sensors))
        rows = row_of_sensor[digits.sensor.astype(np.int64)]
        keep = rows >= 0
        out[rows[keep], digits.ucell[keep].astype(np.int64), digits.vcell[keep].astype(np.int64)] = digits.charge[keep]
        return out

    def event_tensor(self, event: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One event for IEA-GAN: images ``(40, 1, 256, 768)`` in [-1, 1] and labels
        ``(40,)`` = sensor indices 0..39, canonical order."""
        images = adc_to_model(torch.from_numpy(self.adc_images(event))).unsqueeze(1)
        return images, torch.from_numpy(SENSOR_LABELS.copy())

    def image_tensor(self, events: np.ndarray, sensors: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Single sensor images for the unconditional models: image j is sensor
        ``sensors[j]`` of event ``events[j]``; ``(B, 1, 256, 768)`` and labels ``(B,)``."""
        events, sensors = np.asarray(events, np.int64), np.asarray(sensors, np.int64)
        if events.shape != sensors.shape or events.ndim != 1:
            raise ValueError("events and sensors must be 1-d arrays of equal length")
        adc = np.empty((len(events), N_UCELLS, N_VCELLS), dtype=np.uint8)
        for ev in np.unique(events):
            idx = np.flatnonzero(events == ev)
            # One read per event; a sensor drawn twice from one event is built once.
            wanted, where = np.unique(sensors[idx], return_inverse=True)
            adc[idx] = self.adc_images(int(ev), wanted)[where]
        images = adc_to_model(torch.from_numpy(adc)).unsqueeze(1)
        return images, torch.from_numpy(sensors)

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> "TrainingSample":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BatchSampler:
    """Draws training batches with its own seeded torch generator, so a resumed run draws
    exactly the batches an uninterrupted one would (its state is saved with the run)."""

    def __init__(self, sample: TrainingSample, *, seed: int):
        self.sample = sample
        self.generator = torch.Generator().manual_seed(int(seed))

    def event(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A random event: ``(40, 1, 256, 768)`` images and labels 0..39."""
        i = int(torch.randint(self.sample.n_events, (1,), generator=self.generator))
        return self.sample.event_tensor(i)

    def images(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch`` random sensor images, each from a random event and sensor."""
        events = torch.randint(self.sample.n_events, (batch,), generator=self.generator).numpy()
        sensors = torch.randint(N_SENSORS, (batch,), generator=self.generator).numpy()
        return self.sample.image_tensor(events, sensors)

    def get_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
