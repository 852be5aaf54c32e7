"""Validation metrics on inputs whose answers are known by construction."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pxdbg.digits import DigitsWriter, PXDDigits, dense_to_digits
from pxdbg.sensors import EVENT_SHAPE, N_SENSORS
from pxdbg.validation.metrics import (
    CLUSTER_CHARGE_BIN,
    SampleSummary,
    cluster_properties,
    compare,
    frechet_distance,
    histogram_distances,
    spearman_matrix,
    summarize,
    summarize_file,
    validate_files,
)


def _random_events(rng, n, occupancy=0.002, lo=7, hi=200):
    events = []
    for _ in range(n):
        ev = np.zeros(EVENT_SHAPE, np.uint8)
        scale = rng.gamma(4.0, 0.25)
        mask = rng.random(EVENT_SHAPE) < occupancy * scale
        ev[mask] = rng.integers(lo, hi, mask.sum())
        events.append(ev)
    return events


@pytest.fixture(scope="module")
def sample():
    return _random_events(np.random.default_rng(1), 6)


def _digits(pixels):
    """PXDDigits from a list of (sensor, u, v, charge), sorted as the format requires."""
    arr = np.array(sorted(pixels), dtype=np.int64)
    return PXDDigits(arr[:, 0].astype(np.uint8), arr[:, 1].astype(np.uint16), arr[:, 2].astype(np.uint16),
                     arr[:, 3].astype(np.uint8))


def test_identical_samples_give_zero_distances(sample):
    gen = summarize([np.stack(sample)])
    ref = summarize([dense_to_digits(e) for e in sample])
    report = compare(gen, ref)
    assert report.charge_w1 == 0 and report.charge_ks == 0
    assert report.cluster_size_w1 == 0 and report.cluster_charge_w1 == 0
    assert np.all(report.occupancy_w1 == 0) and np.all(report.occupancy_ks == 0)
    assert np.all(report.occupancy_relative_error == 0)
    assert report.spearman_max_abs_difference == 0
    assert report.frechet_distance == pytest.approx(0.0, abs=1e-5)


def test_shifted_charge_spectrum_gives_the_shift(sample):
    shift = 17
    shifted = []
    for ev in sample:
        s = ev.astype(np.int32)
        s[s > 0] += shift  # stays below 255: charges were drawn below 200
        shifted.append(s.astype(np.uint8))
    report = compare(summarize(shifted), summarize(sample))
    assert report.charge_w1 == pytest.approx(shift)
    # Uniform charges 7..199 moved by 17: the CDFs differ at most by 17 / 193.
    assert report.charge_ks == pytest.approx(shift / 193, abs=0.02)
    # Same pixels: occupancy and cluster sizes unchanged.
    assert report.cluster_size_w1 == 0
    assert np.all(report.occupancy_relative_error == 0)
    # Cluster charge moves by shift * size per cluster; with 8-ADU bins only approximately.
    expected = shift * report.mean_cluster_size_reference
    assert report.cluster_charge_w1 == pytest.approx(expected, abs=CLUSTER_CHARGE_BIN)


def test_histogram_distances_known_values():
    a = np.zeros(10)
    b = np.zeros(10)
    a[2], b[5] = 4, 1
    assert histogram_distances(a, b) == (pytest.approx(3.0), pytest.approx(1.0))
    assert histogram_distances(a, b, bin_width=8) == (pytest.approx(24.0), pytest.approx(1.0))
    a = np.array([1, 1, 0, 0.0])
    b = np.array([1, 0, 1, 0.0])
    w1, ks = histogram_distances(a, b)
    assert w1 == pytest.approx(0.5) and ks == pytest.approx(0.5)
    assert np.isnan(histogram_distances(np.zeros(3), np.ones(3))[0])
    with pytest.raises(ValueError):
        histogram_distances(np.ones(3), np.ones(4))


def test_hand_made_clusters():
    pixels = [
        (3, 10, 10, 20), (3, 10, 11, 30), (3, 11, 12, 40),  # diagonal contact: one cluster of 3
        (3, 20, 20, 9),  # isolated
        (3, 5, 5, 10), (3, 6, 4, 11),  # down-left diagonal: one cluster of 2
        (3, 0, 767, 50), (3, 1, 0, 60),  # consecutive keys across the v edge: NOT neighbours
        (3, 249, 100, 70), (4, 0, 100, 80),  # last row of sensor 3, first of sensor 4: NOT neighbours
        (5, 30, 30, 255), (5, 30, 32, 255),  # one empty column between: two clusters
    ]
    d = _digits(pixels)
    size, charge, owner = cluster_properties(d.pixel_key, d.charge)
    got = sorted(zip(owner.tolist(), size.tolist(), charge.tolist()))
    assert got == sorted([
        (3, 3, 90), (3, 1, 9), (3, 2, 21), (3, 1, 50), (3, 1, 60), (3, 1, 70), (4, 1, 80), (5, 1, 255), (5, 1, 255),
    ])
    summary = summarize([d])
    assert summary.cluster_size_hist[1] == 7 and summary.cluster_size_hist[2] == 1
    assert summary.cluster_size_hist[3] == 1 and summary.cluster_size_hist.sum() == 9
    assert summary.fired[0, 3] == 9 and summary.fired[0, 4] == 1 and summary.fired[0, 5] == 2
    assert summary.charge_hist[255] == 2


def test_clusters_do_not_join_across_events():
    d = _digits([(39, 249, 767, 10)])
    e = _digits([(0, 0, 0, 10)])
    summary = summarize([[d, e]])
    assert summary.cluster_size_hist[1] == 2


def test_spearman_on_constructed_data():
    rng = np.random.default_rng(5)
    occ = rng.random((50, N_SENSORS))
    occ[:, 1] = occ[:, 0] ** 3  # monotonic: rank correlation exactly 1
    occ[:, 2] = -occ[:, 0]  # anti-monotonic: -1
    occ[:, 3] = 0.5  # constant: reported as 0 and listed
    rho, constant = spearman_matrix(occ)
    assert rho[0, 1] == pytest.approx(1.0) and rho[1, 0] == pytest.approx(1.0)
    assert rho[0, 2] == pytest.approx(-1.0)
    assert constant == [3] and np.all(rho[3, [0, 1, 2, 4]] == 0) and rho[3, 3] == 1
    assert np.allclose(np.diag(rho), 1.0)
    from scipy.stats import spearmanr

    assert rho[4, 7] == pytest.approx(spearmanr(occ[:, 4], occ[:, 7]).statistic)
    assert np.all(np.isnan(spearman_matrix(occ[:2])[0]))


def test_frechet_distance_known_values():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 5))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    shifted = x + np.array([2.0, 0, 0, 0, 0])  # same covariance, mean moved by 2: FD = 4
    assert frechet_distance(x, shifted) == pytest.approx(4.0, rel=1e-6)
    # Scaling one feature by 3 (variance 1 -> 9): (3 - 1)^2 * var = 4 * var.
    scaled = x.copy()
    scaled[:, 1] *= 3
    var = np.var(x[:, 1], ddof=1)
    assert frechet_distance(x, scaled) == pytest.approx(4 * var, rel=1e-3)
    assert np.isnan(frechet_distance(x[:1], x))


def test_occupancy_relative_error_and_spearman_see_a_change(sample):
    doubled = []
    rng = np.random.default_rng(9)
    for ev in sample:
        extra = np.zeros(EVENT_SHAPE, np.uint8)
        # Double sensor 0 only: add as many new fired pixels as it had, in empty spots.
        free = np.flatnonzero(ev[0].reshape(-1) == 0)
        n = int((ev[0] > 0).sum())
        pick = rng.choice(free, n, replace=False)
        e = ev.copy()
        e[0].reshape(-1)[pick] = 50
        doubled.append(e)
    report = compare(summarize(doubled), summarize(sample))
    assert report.occupancy_relative_error[0] == pytest.approx(1.0)
    assert np.all(report.occupancy_relative_error[1:] == 0)
    assert report.frechet_distance > 1.0


def test_report_json_is_strict_and_complete(sample):
    report = compare(summarize(sample[:2]), summarize(sample[2:]))
    doc = json.loads(report.to_json())
    for key in ("occupancy_generated", "spearman_difference", "frechet_distance", "definitions", "scalars"):
        assert key in doc
    assert len(doc["spearman_generated"]) == 40 and len(doc["spearman_generated"][0]) == 40
    # 2 events: Spearman undefined -> null, not NaN (strict JSON)
    assert doc["spearman_generated"][0][1] is None


def test_max_events_cuts_a_dense_batch(sample):
    assert summarize([np.stack(sample)], max_events=4).n_events == 4
    assert summarize((e for e in sample), max_events=2).n_events == 2


def test_bad_dense_input_is_refused():
    with pytest.raises(ValueError, match="shape"):
        summarize([np.zeros((40, 256, 768), np.uint8)])
    with pytest.raises(ValueError, match="ADC"):
        summarize([np.zeros(EVENT_SHAPE, np.float32)])


def test_duplicate_pixels_are_refused():
    d = PXDDigits(np.array([1, 1], np.uint8), np.array([2, 2], np.uint16), np.array([3, 3], np.uint16),
                  np.array([10, 10], np.uint8))
    with pytest.raises(ValueError, match="same pixel"):
        summarize([d])


def test_summary_file_streaming_and_save_load(tmp_path, sample):
    path = tmp_path / "s.h5"
    with DigitsWriter(path) as w:
        for ev in sample:
            w.append(dense_to_digits(ev))
    in_memory = summarize(sample)
    streamed = summarize_file(path, block=4)  # blocks of 4: the last block is partial
    assert np.array_equal(in_memory.fired, streamed.fired)
    assert np.array_equal(in_memory.cluster_charge_hist, streamed.cluster_charge_hist)
    assert np.allclose(in_memory.features, streamed.features)
    streamed.save(tmp_path / "sum.npz")
    again = SampleSummary.load(tmp_path / "sum.npz")
    assert again.n_events == len(sample) and np.array_equal(again.fired, streamed.fired)


def test_validate_files_writes_report(tmp_path, sample):
    for name, events in (("gen.h5", sample[:3]), ("ref.h5", sample[3:])):
        with DigitsWriter(tmp_path / name) as w:
            for ev in events:
                w.append(dense_to_digits(ev))
    report = validate_files(tmp_path / "gen.h5", tmp_path / "ref.h5", tmp_path / "out", plots=False)
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert doc["n_generated"] == 3 and doc["inputs"]["reference"].endswith("ref.h5")
    assert doc["frechet_distance"] == pytest.approx(report.frechet_distance)
