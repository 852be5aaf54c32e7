"""pxd-digits files: round trips, streaming, block reads, dense batches, bad files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from pxdbg.datasets.dense import count_events, iter_dense_events, read_dense
from pxdbg.datasets.synthetic import SyntheticBackground, SyntheticConfig, write_synthetic
from pxdbg.digits import (
    DigitsFormatError,
    DigitsReader,
    DigitsWriter,
    PXDDigits,
    dense_to_digits,
    digits_block_to_dense,
    digits_to_dense,
)

SMALL = SyntheticConfig(clusters_layer1=20, clusters_layer2=8, block_events=5)


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("digits") / "sample.h5"
    write_synthetic(path, 23, seed=4, config=SMALL)
    return path


def _same(a, b):
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("sensor", "ucell", "vcell", "charge"))


def test_dense_round_trip():
    ev = SyntheticBackground(SMALL, 1).generate(1)[0]
    dense = digits_to_dense(ev)
    assert dense.shape == (40, 250, 768) and dense.dtype == np.uint8
    assert _same(dense_to_digits(dense), ev)


def test_write_read_stream_and_blocks(tmp_path):
    events = SyntheticBackground(SMALL, 3).generate(10)
    events[4] = PXDDigits.empty()
    path = tmp_path / "f.h5"
    with DigitsWriter(path) as w:
        w.append_many(events[:6], exp=[1] * 6, run=[2] * 6)
        for ev in events[6:]:
            w.append(ev, exp=1, run=3)
    with DigitsReader(path) as r:
        assert len(r) == 10
        assert all(_same(a, b) for a, b in zip(r.iter_events(block=3), events))
        offsets, block = r.read_range(3, 8)
        assert offsets[0] == 0 and len(offsets) == 6
        for j in range(5):
            x, y = offsets[j], offsets[j + 1]
            assert _same(PXDDigits(block.sensor[x:y], block.ucell[x:y], block.vcell[x:y], block.charge[x:y]),
                         events[3 + j])
        dense = digits_block_to_dense(offsets, block)
        assert np.array_equal(dense[1], digits_to_dense(events[4])) and dense[1].sum() == 0
        with pytest.raises(IndexError):
            r.read_range(5, 11)
        assert list(r.run) == [2] * 6 + [3] * 4


def test_dense_batches(sample_file):
    n = count_events(sample_file)
    reference = read_dense(sample_file, range(n))
    batches = list(iter_dense_events(sample_file, batch=4, buffer=7))
    assert [len(b) for b in batches] == [4] * 5 + [3]
    assert np.array_equal(np.concatenate(batches), reference)
    assert [len(b) for b in iter_dense_events(sample_file, batch=4, drop_last=True)] == [4] * 5
    assert sum(len(b) for b in iter_dense_events(sample_file, batch=3, max_events=10)) == 10


def test_dense_shuffle_is_a_seeded_permutation(sample_file):
    n = count_events(sample_file)
    reference = read_dense(sample_file, range(n)).reshape(n, -1)
    ref_sums = reference.sum(axis=1, dtype=np.int64)

    def order(seed, buffer=6):
        out = []
        for b in iter_dense_events(sample_file, batch=5, shuffle=True, seed=seed, buffer=buffer):
            for ev in b:
                (match,) = np.flatnonzero(ref_sums == ev.sum(dtype=np.int64))
                assert np.array_equal(ev.reshape(-1), reference[match])
                out.append(int(match))
        return out

    first = order(1)
    assert sorted(first) == list(range(n))  # every event exactly once
    assert first != list(range(n))
    assert order(1) == first and order(2) != first
    assert sorted(order(3, buffer=1000)) == list(range(n))


def test_reused_output_buffer(sample_file):
    seen = [b.copy() for b in iter_dense_events(sample_file, batch=8, reuse_output=True)]
    assert np.array_equal(np.concatenate(seen), read_dense(sample_file, range(count_events(sample_file))))


def test_bad_files(tmp_path):
    with pytest.raises(DigitsFormatError, match="not a readable HDF5"):
        DigitsReader(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(DigitsFormatError):
        list(iter_dense_events(junk))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(DigitsFormatError, match="not a pxd-digits file"):
        DigitsReader(other)
    newer = tmp_path / "v2.h5"
    with h5py.File(newer, "w") as f:
        f.attrs["format"] = "pxd-digits"
        f.attrs["version"] = 2
    with pytest.raises(DigitsFormatError, match="version"):
        DigitsReader(newer)
    write_synthetic(tmp_path / "ok.h5", 2, seed=0, config=SMALL)
    with pytest.raises(DigitsFormatError, match="out of range"):
        read_dense(tmp_path / "ok.h5", [2])


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "crash.h5"
    with pytest.raises(RuntimeError):
        with DigitsWriter(path) as w:
            w.append(PXDDigits.empty())
            raise RuntimeError("job killed")
    assert not path.exists() and not (tmp_path / "crash.h5.tmp").exists()
