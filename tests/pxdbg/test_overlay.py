"""Overlay: signal is never dropped, shared pixels add and saturate at 255."""

import numpy as np
import pytest

from pxdbg.digits import DigitsFormatError, DigitsReader, DigitsWriter, PXDDigits, dense_to_digits, digits_to_dense
from pxdbg.overlay import overlay_event, overlay_events, overlay_files
from pxdbg.sensors import EVENT_SHAPE


def _random_event(rng, occupancy=0.002):
    dense = np.zeros(EVENT_SHAPE, np.uint8)
    mask = rng.random(EVENT_SHAPE) < occupancy
    dense[mask] = rng.integers(1, 256, mask.sum())
    return dense


def test_overlay_matches_dense_saturating_sum():
    rng = np.random.default_rng(1)
    sig, bg = _random_event(rng), _random_event(rng, 0.01)
    bg[0, :5, :5] = 200  # force overlaps that saturate
    sig[0, :5, :5] = 100
    merged = overlay_event(dense_to_digits(sig), dense_to_digits(bg))
    merged.validate()
    expected = np.minimum(sig.astype(np.int32) + bg, 255).astype(np.uint8)
    assert np.array_equal(digits_to_dense(merged), expected)
    assert np.all(digits_to_dense(merged)[0, :5, :5] == 255)


def test_signal_never_dropped():
    rng = np.random.default_rng(2)
    sig = dense_to_digits(_random_event(rng))
    bg = dense_to_digits(_random_event(rng, 0.05))
    merged = overlay_event(sig, bg)
    pos = np.searchsorted(merged.pixel_key, sig.pixel_key)
    assert np.array_equal(merged.pixel_key[pos], sig.pixel_key)
    assert np.all(merged.charge[pos] >= sig.charge)
    assert len(merged) == len(np.union1d(sig.pixel_key, bg.pixel_key))


def test_empty_sides():
    rng = np.random.default_rng(3)
    sig = dense_to_digits(_random_event(rng))
    assert overlay_event(sig, PXDDigits.empty()) is sig
    assert len(overlay_event(PXDDigits.empty(), sig)) == len(sig)
    assert len(overlay_event(PXDDigits.empty(), PXDDigits.empty())) == 0


def test_invalid_input_is_refused_not_merged():
    bad = PXDDigits(np.array([0, 0], np.uint8), np.array([1, 1], np.uint16),
                    np.array([2, 2], np.uint16), np.array([5, 6], np.uint8))  # duplicate pixel
    with pytest.raises(DigitsFormatError, match="signal digits"):
        overlay_event(bad, PXDDigits.empty())


def test_stream_needs_enough_background():
    rng = np.random.default_rng(4)
    sig = [dense_to_digits(_random_event(rng)) for _ in range(3)]
    bg = [dense_to_digits(_random_event(rng))]
    with pytest.raises(ValueError, match="ran out after 1 events"):
        list(overlay_events(sig, bg))
    assert len(list(overlay_events(sig, bg, reuse_background=True))) == 3


def test_overlay_files_streams_and_keeps_signal_event_ids(tmp_path):
    rng = np.random.default_rng(5)
    sig_dense = [_random_event(rng) for _ in range(5)]
    bg_dense = [_random_event(rng, 0.005) for _ in range(6)]
    with DigitsWriter(tmp_path / "sig.h5") as w:
        w.append_many([dense_to_digits(d) for d in sig_dense], exp=[3] * 5, run=[7] * 5, evt=[10, 11, 12, 13, 14])
    with DigitsWriter(tmp_path / "bg.h5") as w:
        w.append_many([dense_to_digits(d) for d in bg_dense], exp=[0] * 6, run=[0] * 6)
    seen = []
    n = overlay_files(tmp_path / "sig.h5", tmp_path / "bg.h5", tmp_path / "out.h5", block=2, progress=seen.append)
    assert n == 5 and sum(seen) == 5
    with DigitsReader(tmp_path / "out.h5") as r:
        assert list(r.evt) == [10, 11, 12, 13, 14] and set(r.exp) == {3} and set(r.run) == {7}
        for i in range(5):
            expected = np.minimum(sig_dense[i].astype(np.int32) + bg_dense[i], 255)
            assert np.array_equal(r.dense(i), expected)
    with pytest.raises(ValueError, match="fewer than"):
        overlay_files(tmp_path / "bg.h5", tmp_path / "sig.h5", tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()
