"""basf2 ROOT (PXDDigits branches) -> pxd-digits import, with files written by uproot."""

from __future__ import annotations

import awkward as ak
import h5py
import numpy as np
import pytest
import uproot

from pxdbg.datasets.root_import import (
    RootImportError,
    decode_vxdid,
    encode_vxdid,
    import_root,
    vxdid_to_index,
    write_basf2_like_root,
)
from pxdbg.datasets.synthetic import SyntheticBackground, SyntheticConfig
from pxdbg.digits import DigitsFormatError, DigitsReader, PXDDigits
from pxdbg.sensors import N_SENSORS, SENSOR_IDS


def _small_events(n=6, seed=2):
    config = SyntheticConfig(clusters_layer1=8, clusters_layer2=3, block_events=4)
    events = SyntheticBackground(config, seed).generate(n)
    events.insert(2, PXDDigits.empty())  # an event without PXD hits must survive
    return events


def _same(a: PXDDigits, b: PXDDigits) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("sensor", "ucell", "vcell", "charge"))


def test_vxdid_bit_layout():
    # basf2 VxdID: segment 5 bits, sensor 3, ladder 5, layer 3 (least significant first).
    assert int(encode_vxdid(1, 1, 1)) == 8480
    assert int(encode_vxdid(2, 12, 2)) == (2 << 13) | (12 << 8) | (2 << 5)
    assert [int(x) for x in decode_vxdid(encode_vxdid(2, 7, 1, 9))] == [2, 7, 1, 9]
    ids = encode_vxdid(SENSOR_IDS[:, 0], SENSOR_IDS[:, 1], SENSOR_IDS[:, 2], 3)  # frame number ignored
    assert np.array_equal(vxdid_to_index(ids), np.arange(N_SENSORS))
    assert list(vxdid_to_index([encode_vxdid(3, 1, 1), encode_vxdid(1, 9, 1), encode_vxdid(1, 1, 3)])) == [-1, -1, -1]


def test_round_trip_through_basf2_layout(tmp_path):
    events = _small_events()
    root = write_basf2_like_root(tmp_path / "bg.root", events, exp=1003, run=42, first_event=10)
    with uproot.open(root) as f:
        keys = set(f["tree"].keys())
    assert {"PXDDigits.m_sensorID", "PXDDigits.m_uCellID", "PXDDigits.m_vCellID", "PXDDigits.m_charge"} <= keys
    stats = import_root([root], tmp_path / "bg.h5", step=3)  # several chunks, one crossing the empty event
    assert stats.events == len(events) and stats.digits_written == sum(len(e) for e in events)
    with DigitsReader(tmp_path / "bg.h5") as reader:
        assert reader.n_events == len(events)
        assert list(reader.exp) == [1003] * len(events) and list(reader.run) == [42] * len(events)
        assert list(reader.evt) == list(range(10, 10 + len(events)))
        for i, ev in enumerate(events):
            got = reader.event(i)
            got.validate()
            assert _same(got, ev)


def test_uproot_record_layout_and_unsorted_duplicates(tmp_path):
    """uproot's own record layout (PXDDigits_m_sensorID, counter nPXDDigits), digits in any
    order, a pixel read twice (two frames) and charges as floats above 255."""
    sid = encode_vxdid(1, 2, 1)
    seg = encode_vxdid(1, 2, 1, 1)  # same sensor, another readout frame
    digits = ak.zip({
        "m_sensorID": ak.values_astype(ak.Array([[int(encode_vxdid(2, 1, 2)), int(sid), int(seg)], [int(sid)]]), np.uint16),
        "m_uCellID": ak.values_astype(ak.Array([[5, 7, 7], [0]]), np.uint16),
        "m_vCellID": ak.values_astype(ak.Array([[6, 8, 8], [767]]), np.uint16),
        "m_charge": ak.Array([[30.4, 200.0, 100.0], [0.0]]),
    })
    path = tmp_path / "rec.root"
    with uproot.recreate(path) as f:
        t = f.mktree("tree", {"PXDDigits": digits.type})
        t.extend({"PXDDigits": digits})
    stats = import_root(path, tmp_path / "rec.h5", exp=7, run=8)
    assert stats.merged_duplicates == 1 and stats.saturated == 1 and stats.below_threshold == 1
    with DigitsReader(tmp_path / "rec.h5") as reader:
        first = reader.event(0)
        s = int(vxdid_to_index(sid))
        assert list(first.sensor) == [s, 16 + 1] and list(first.charge) == [255, 30]
        assert list(first.ucell) == [7, 5] and list(first.vcell) == [8, 6]
        assert len(reader.event(1)) == 0  # zero charge dropped
        assert list(reader.exp) == [7, 7] and list(reader.evt) == [1, 2]


def test_threshold_and_max_events(tmp_path):
    events = _small_events()
    root = write_basf2_like_root(tmp_path / "bg.root", events)
    stats = import_root(root, tmp_path / "cut.h5", threshold=20, max_events=4)
    assert stats.events == 4
    with DigitsReader(tmp_path / "cut.h5") as reader:
        assert reader.n_events == 4
        for i in range(4):
            d = reader.event(i)
            assert len(d) == int((events[i].charge >= 20).sum())
            assert (len(d) == 0) or d.charge.min() >= 20


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(RootImportError, match="no such file"):
        import_root(tmp_path / "missing.root", tmp_path / "x.h5")
    junk = tmp_path / "junk.root"
    junk.write_bytes(b"this is not ROOT" * 10)
    with pytest.raises(RootImportError, match="not a readable ROOT file"):
        import_root(junk, tmp_path / "x.h5")
    other = tmp_path / "other.root"
    with uproot.recreate(other) as f:
        f.mktree("events", {"x": np.int32}).extend({"x": np.arange(3, dtype=np.int32)})
    with pytest.raises(RootImportError, match="no tree 'tree'"):
        import_root(other, tmp_path / "x.h5")
    with pytest.raises(RootImportError, match="m_sensorID"):
        import_root(other, tmp_path / "x.h5", tree="events")
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "x.h5.tmp").exists()
    # A digit on an SVD sensor (layer 3) is not a PXD pixel.
    bad = tmp_path / "svd.root"
    counts = np.array([1])
    data = {"PXDDigits.m_sensorID": ak.unflatten(encode_vxdid([3], [1], [1]), counts),
            "PXDDigits.m_uCellID": ak.unflatten(np.array([1], np.uint16), counts),
            "PXDDigits.m_vCellID": ak.unflatten(np.array([1], np.uint16), counts),
            "PXDDigits.m_charge": ak.unflatten(np.array([10], np.uint16), counts)}
    with uproot.recreate(bad) as f:
        f.mktree("tree", {k: v.type for k, v in data.items()}, counter_name=lambda n: "PXDDigits_").extend(data)
    with pytest.raises(RootImportError, match=r"entry 0: .*3\.1\.1.* not a PXD pixel"):
        import_root(bad, tmp_path / "x.h5")
    assert issubclass(RootImportError, DigitsFormatError)
    assert not (tmp_path / "x.h5").exists()


def test_import_attributes(tmp_path):
    root = write_basf2_like_root(tmp_path / "bg.root", _small_events(3))
    import_root([root], tmp_path / "a.h5")
    with h5py.File(tmp_path / "a.h5") as f:
        assert f.attrs["source_files"] == str(root)
        assert f.attrs["import_digits_written"] == f["charge"].shape[0]
