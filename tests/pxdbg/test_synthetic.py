"""Properties the synthetic background sample promises (see pxdbg.datasets.synthetic)."""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest

from pxdbg.datasets.synthetic import SyntheticBackground, SyntheticConfig, write_synthetic
from pxdbg.digits import DigitsReader
from pxdbg.sensors import SENSOR_LAYER, SENSOR_NUMBER, ZERO_SUPPRESSION_ADU
from pxdbg.validation.metrics import spearman_matrix, summarize


@pytest.fixture(scope="module")
def events():
    return SyntheticBackground(seed=11).generate(48)


@pytest.fixture(scope="module")
def summary(events):
    return summarize(events)


def test_events_are_valid_digits(events):
    for ev in events:
        ev.validate()  # sorted, unique per pixel, in range, no zero charge
        assert len(ev) > 1000


def test_inner_layer_occupancy_is_higher(summary):
    occ = summary.mean_occupancy
    inner, outer = occ[SENSOR_LAYER == 1].mean(), occ[SENSOR_LAYER == 2].mean()
    assert inner > 1.8 * outer
    # every single inner sensor above the outer-layer average
    assert occ[SENSOR_LAYER == 1].min() > outer
    # backward sensors (number 2) busier than forward ones
    assert occ[SENSOR_NUMBER == 2].mean() > occ[SENSOR_NUMBER == 1].mean()


def test_charge_cut_and_saturation(summary):
    hist = summary.charge_hist
    assert hist[:ZERO_SUPPRESSION_ADU].sum() == 0
    assert hist[ZERO_SUPPRESSION_ADU] > 0
    assert hist[255] > 0  # saturated pixels exist
    assert hist[255] > hist[250:255].sum() / 5  # a real pile-up at 255, not just the tail
    # Landau-like: the spectrum peaks at low ADU and has a long tail
    peak = int(np.argmax(hist))
    assert 7 <= peak < 60
    mean = (hist * np.arange(256)).sum() / hist.sum()
    assert mean > peak


def test_clusters_have_several_pixels(summary):
    sizes = summary.cluster_size_hist
    mean_size = (sizes * np.arange(len(sizes))).sum() / sizes.sum()
    assert 1.8 < mean_size < 8
    assert sizes[1] > 0 and sizes[2:].sum() > sizes[1]


def test_sensors_are_correlated_within_events(summary):
    rho, constant = spearman_matrix(summary.occupancy)
    assert constant == []
    off = ~np.eye(40, dtype=bool)
    assert rho[off].mean() > 0.3
    same_ladder = np.mean([rho[2 * i, 2 * i + 1] for i in range(20)])
    cross_layer = rho[:16, 16:].mean()
    assert same_ladder > cross_layer + 0.1


def test_seeded_reproducibility(tmp_path):
    a = write_synthetic(tmp_path / "a.h5", 5, seed=7)
    b = write_synthetic(tmp_path / "b.h5", 5, seed=7)
    c = write_synthetic(tmp_path / "c.h5", 5, seed=8)

    def digest(path):
        with h5py.File(path) as f:
            h = hashlib.sha256()
            for name in ("event_offsets", "sensor", "ucell", "vcell", "charge"):
                h.update(f[name][:].tobytes())
            return h.hexdigest()

    assert digest(a) == digest(b) != digest(c)


def test_written_file(tmp_path):
    path = write_synthetic(tmp_path / "s.h5", 7, seed=1, exp=3, run=5, first_event=100)
    with DigitsReader(path) as reader:
        assert reader.n_events == 7
        assert list(reader.exp) == [3] * 7 and list(reader.run) == [5] * 7
        assert list(reader.evt) == list(range(100, 107))
        assert "not physics" in reader.attrs["description"]
        assert int(reader.attrs["seed"]) == 1
        for ev in reader:
            ev.validate()


def test_config_changes_the_sample():
    quiet = SyntheticBackground(SyntheticConfig(clusters_layer1=10, clusters_layer2=5), seed=0).generate(4)
    busy = SyntheticBackground(SyntheticConfig(), seed=0).generate(4)
    assert sum(map(len, busy)) > 5 * sum(map(len, quiet))
    with pytest.raises(ValueError):
        SyntheticBackground(SyntheticConfig(block_events=0))
