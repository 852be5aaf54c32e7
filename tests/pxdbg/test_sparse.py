"""The sparse model: fitting, valid and reproducible digits, fidelity, checkpoints, CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from pxdbg.cli import main
from pxdbg.datasets.synthetic import SyntheticConfig, preset, write_synthetic
from pxdbg.digits import DigitsReader, PXDDigits
from pxdbg.models import sparse
from pxdbg.models.sparse import N_CHANNELS, SparseModelError, _touching, _touching_settled
from pxdbg.sensors import N_UCELLS, N_VCELLS, SENSOR_LAYER, ZERO_SUPPRESSION_ADU
from pxdbg.training.sparse import fit_sparse
from pxdbg.validation.metrics import summarize, summarize_file
from registry.exceptions import CheckpointFormatError, ManifestMismatchError
from registry.manifest import Manifest

SMALL = SyntheticConfig(clusters_layer1=24, clusters_layer2=10, block_events=8, injection_fraction=0.1)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("sparse") / "train.h5", 40, seed=3, config=SMALL)


@pytest.fixture(scope="module")
def model(sample):
    return fit_sparse([sample], seed=1)


def test_fit_builds_a_consistent_model(model, sample):
    assert model.n_training_events == 40
    with DigitsReader(sample) as reader:
        n_pixels = int(reader.offsets[-1])
    # Every fired training pixel is in the library (a small sample fits the size budget).
    assert model.n_pixels == n_pixels
    assert model.event_counts.shape == (40, N_CHANNELS)
    assert model.neighbours == round(40 ** 0.5)
    assert (model.partner != np.arange(40)).all()
    assert list(model.kind_edges)[0] == 1  # isolated pixels are a kind of their own


def test_generated_digits_are_valid(model):
    events = model.generate_events([(5, i) for i in range(12)])
    assert len(events) == 12
    for ev in events:
        ev.validate()  # sorted by (sensor, u, v), unique per pixel, in range, no zero charge
        assert len(ev) > 0
        assert ev.charge.min() >= ZERO_SUPPRESSION_ADU  # the training sample's threshold
        assert ev.ucell.max() < N_UCELLS and ev.vcell.max() < N_VCELLS


def test_seeds_reproduce_whatever_the_batch(model):
    keys = [(9, i) for i in range(6)]
    together = model.generate_events(keys)
    alone = [model.generate_events([k])[0] for k in reversed(keys)][::-1]
    again = model.generate_events(keys)
    for a, b, c in zip(together, alone, again):
        assert np.array_equal(a.pixel_key, b.pixel_key) and np.array_equal(a.charge, b.charge)
        assert np.array_equal(a.pixel_key, c.pixel_key)
    other = model.generate_events([(10, 0)])[0]
    assert not np.array_equal(other.pixel_key, together[0].pixel_key)


def test_occupancy_per_layer_follows_the_training_sample(model, sample):
    generated = summarize(model.generate_events([(77, i) for i in range(60)]))
    training = summarize_file(sample)
    for layer in (1, 2):
        mask = SENSOR_LAYER == layer
        gen, ref = generated.mean_occupancy[mask].mean(), training.mean_occupancy[mask].mean()
        assert abs(gen - ref) / ref < 0.2, (layer, gen, ref)
    # cluster sizes and pixel charges too, loosely
    assert abs(generated.features[:, 42].mean() - training.features[:, 42].mean()) < 0.5
    assert abs(generated.features[:, 41].mean() - training.features[:, 41].mean()) < 5


def test_no_generated_event_equals_a_training_event(model, sample):
    with DigitsReader(sample) as reader:
        training = {reader.event(i).pixel_key.tobytes() for i in range(reader.n_events)}
    for ev in model.generate_events([(3, i) for i in range(40)]):
        assert ev.pixel_key.tobytes() not in training


def _write_events(path, events):
    from pxdbg.digits import DigitsWriter

    with DigitsWriter(path) as writer:
        writer.append_many(events, exp=[0] * len(events), run=[0] * len(events))
    return path


def test_cluster_mix_follows_the_kind_of_event(tmp_path):
    """Busy frames of high-charge pixels and quiet frames of low-charge ones: a pooled
    library would give quiet frames mostly high charges (busy frames hold most pixels);
    the model must draw a channel's clusters from training events as busy as the new one."""
    rng = np.random.default_rng(2)
    events = []
    for busy in [True] * 16 + [False] * 16:
        n = rng.poisson(300 if busy else 30, size=40)
        sensor = np.repeat(np.arange(40), n)
        # isolated pixels: even rows and columns only, so no two touch
        cell = np.concatenate([rng.choice(125 * 384, k, replace=False) for k in n])
        key = sensor * (N_UCELLS * N_VCELLS) + (cell // 384) * 2 * N_VCELLS + (cell % 384) * 2
        order = np.argsort(key)
        events.append(PXDDigits.from_pixel_key(key[order], np.full(len(key), 200 if busy else 10, np.uint8)))
    model = fit_sparse([_write_events(tmp_path / "two-kinds.h5", events)])
    generated = model.generate_events([(1, i) for i in range(60)])
    fired = np.array([len(ev) for ev in generated])
    charge = np.array([np.median(ev.charge) for ev in generated])
    busy = fired > np.sqrt(40 * 30 * 40 * 300)
    assert 10 < busy.sum() < 50
    assert np.all(charge[busy] == 200) and np.all(charge[~busy] == 10)
    # No pixel of the other kind of frame (two pixels drawn onto one cell add: 255 or 20).
    pure = [not np.isin(ev.charge, [10, 20] if b else [200, 255]).any() for ev, b in zip(generated, busy)]
    assert np.mean(pure) >= 0.9


def test_clusters_cut_by_an_edge_stay_on_it(tmp_path):
    """Training clusters that all touch the u = 0 edge: generated ones touch it too."""
    rng = np.random.default_rng(0)
    events = []
    for _ in range(12):
        v = np.sort(rng.choice(np.arange(0, N_VCELLS, 4), 30, replace=False))
        # 2-pixel clusters at u = 0, 1 (touching the edge), one column each
        key = np.sort(np.concatenate([v, N_VCELLS + v]))
        events.append(PXDDigits.from_pixel_key(key + 3 * N_UCELLS * N_VCELLS, np.full(len(key), 30, np.uint8)))
    model = fit_sparse([_write_events(tmp_path / "edge.h5", events)])
    for ev in model.generate_events([(4, i) for i in range(5)]):
        assert set(np.unique(ev.ucell)) <= {0, 1}
        assert np.count_nonzero(ev.ucell == 0) == np.count_nonzero(ev.ucell == 1)


def test_touching_clusters_are_found():
    # Cluster 0 at (10, 10); cluster 1 at (11, 11) touches it diagonally; cluster 2 far away;
    # cluster 3 overlaps cluster 2's pixel.
    def key(u, v):
        return u * N_VCELLS + v

    keys = np.array([key(10, 10), key(11, 11), key(100, 500), key(100, 500)])
    owners = np.array([0, 1, 2, 3])
    order = np.argsort(keys, kind="stable")
    moving = _touching(keys[order], owners[order], np.array([4, 3, 2, 1]))
    assert moving.tolist() == [False, True, False, True]  # the lower priority moves
    assert _touching(keys[order], owners[order], np.array([3, 4, 1, 2])).tolist() == [True, False, True, False]
    # Row wrap-around is not adjacency: (10, 767) and (11, 0) are far apart.
    keys = np.array([key(10, N_VCELLS - 1), key(11, 0)])
    assert not _touching(keys, np.array([0, 1]), np.array([2, 1])).any()
    assert _touching(np.array([key(10, 5), key(11, 4)]), np.array([0, 1]), np.array([2, 1])).tolist() == [False, True]
    settled = np.sort(np.array([key(50, 50), key(60, 60)]))
    moved = np.array([key(51, 49), key(70, 70)])
    assert _touching_settled(moved, np.array([0, 1]), settled, 2).tolist() == [True, False]


def test_checkpoint_round_trip_and_refusals(model, tmp_path):
    manifest = Manifest(model="sparse", architecture_version=sparse.ARCHITECTURE_VERSION)
    path = sparse.save(model, tmp_path / "s.safetensors", manifest)
    assert path.read_bytes()[8:9] == b"{"  # safetensors: no pickle
    loaded = sparse.load(path)
    a = model.generate_events([(1, 2)])[0]
    b = loaded.generate_events([(1, 2)])[0]
    assert np.array_equal(a.pixel_key, b.pixel_key) and np.array_equal(a.charge, b.charge)

    wrong = sparse.save(model, tmp_path / "w.safetensors", replace(manifest, model="resnet"))
    with pytest.raises(ManifestMismatchError):
        sparse.load(wrong)
    # A hostile or damaged checkpoint: a cluster that reaches outside the sensor.
    arrays = model.arrays()
    arrays["cluster_u"] = arrays["cluster_u"].copy()
    arrays["cluster_u"][0] = 255
    from registry.checkpoint import write_checkpoint

    bad = write_checkpoint(tmp_path / "bad.safetensors", arrays, manifest)
    with pytest.raises(CheckpointFormatError, match="outside the sensor"):
        sparse.load(bad)
    arrays = model.arrays()
    arrays["library_counts"] = arrays["library_counts"] + 1
    with pytest.raises(SparseModelError):
        sparse.from_arrays(arrays)


def test_checkpoint_round_trips_through_the_conditions_store(model, tmp_path):
    from conditions.iov import IntervalOfValidity
    from conditions.store import open_store
    from pxdbg.module import PXDBackgroundGenerator
    from registry.admin import publish_tag, upload_checkpoint
    from registry.resolve import CheckpointRegistry

    file = sparse.save(model, tmp_path / "sparse.safetensors",
                       Manifest(model="sparse", architecture_version=sparse.ARCHITECTURE_VERSION))
    db = tmp_path / "conditions.db"
    with open_store(db) as store:
        store.create_tag("PXDBackgroundGenerator", "test")
        upload_checkpoint(store, file, model="sparse", globaltag="PXDBackgroundGenerator",
                          iov=IntervalOfValidity.always(), architecture_version=sparse.ARCHITECTURE_VERSION)
        publish_tag(store, "PXDBackgroundGenerator")
    from conditions.cache import PayloadCache

    registry = CheckpointRegistry([str(db)], use_embedded=False, cache=PayloadCache(tmp_path / "cache"))
    try:
        from_store = PXDBackgroundGenerator(model="sparse", seed=4, resolver=registry.as_resolver())
        from_store.initialize()
        from_store.begin_run(0, 1)
        via_store = from_store.events(3)
    finally:
        registry.close()
    from_file = PXDBackgroundGenerator(model="sparse", seed=4, checkpoint=file)
    from_file.initialize()
    for a, b in zip(via_store, from_file.events(3)):
        assert np.array_equal(a.pixel_key, b.pixel_key) and np.array_equal(a.charge, b.charge)


def test_module_runs_sparse_without_images_and_densifies_on_request(model, tmp_path):
    from pxdbg.digits import digits_to_dense
    from pxdbg.module import PXDBackgroundGenerator

    file = sparse.save(model, tmp_path / "m.safetensors",
                       Manifest(model="sparse", architecture_version=sparse.ARCHITECTURE_VERSION))
    gen = PXDBackgroundGenerator(checkpoint=file, seed=-5)  # sparse is the default model
    assert gen.model == "sparse"
    gen.initialize()
    first = gen.events(4)
    dense = gen.generate_dense(1)  # event 4 of the stream, as images
    again = PXDBackgroundGenerator(checkpoint=file, seed=-5)
    again.initialize()
    again.skip_events(4)
    fifth = again.event()
    assert np.array_equal(dense[0].numpy(), digits_to_dense(fifth))
    assert gen.stats.events == 5 and gen.stats.digits == sum(map(len, first)) + len(fifth)
    with pytest.raises(ValueError, match="CPU"):
        PXDBackgroundGenerator(model="sparse", checkpoint=file, device="cuda")


def test_train_generate_validate_floor_from_the_cli(tmp_path):
    runner = CliRunner()
    data = write_synthetic(tmp_path / "train.h5", 30, seed=1, config=SMALL)
    ref = write_synthetic(tmp_path / "ref.h5", 12, seed=2, config=SMALL)
    floor = write_synthetic(tmp_path / "floor.h5", 12, seed=3, config=SMALL)
    floor2 = write_synthetic(tmp_path / "floor2.h5", 12, seed=4, config=SMALL)
    result = runner.invoke(main, ["train", "--model", "sparse", "--data", str(data), "--no-progress",
                                  "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    checkpoint = tmp_path / "run" / "sparse.safetensors"
    assert f"checkpoint: {checkpoint}" in result.output
    assert checkpoint.stat().st_size < 50e6
    from registry.checkpoint import read_manifest

    manifest = read_manifest(checkpoint)
    assert manifest.training_files[0]["name"] == "train.h5" and manifest.training_files[0]["events"] == 30
    assert manifest.metrics["heldout_reference_events"] == 6  # 20% held out
    assert "heldout_charge_ks" in manifest.metrics and "not a physics model" in manifest.description
    assert (tmp_path / "run" / "validation" / "report.json").is_file()

    out = tmp_path / "gen.h5"
    result = runner.invoke(main, ["generate", "--checkpoint", str(checkpoint), "-n", "12", "--seed", "1",
                                  "--no-progress", "-o", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["validate", "-g", str(out), "-r", str(ref), "--floor", str(floor),
                                  "-o", str(tmp_path / "val"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "against the floor (12 events of an independent reference sample" in result.output
    single = json.loads((tmp_path / "val" / "report.json").read_text())["floor_scalars"]
    result = runner.invoke(main, ["validate", "-g", str(out), "-r", str(ref), "--floor", str(floor),
                                  "--floor", str(floor2), "-o", str(tmp_path / "val"), "--no-progress", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "the mean of 2 independent reference samples" in result.output
    both = json.loads((tmp_path / "val" / "report.json").read_text())["floor_scalars"]
    assert both["charge_ks"] != single["charge_ks"]  # the mean of the two floors
    report = json.loads((tmp_path / "val" / "report.json").read_text())
    assert report["floor_scalars"]["charge_ks"] > 0 and report["floor_ratios"]["charge_ks"] > 0
    assert (tmp_path / "val" / "positions.png").is_file() and (tmp_path / "val" / "cluster_extent.png").is_file()


def test_train_cli_refuses_mixed_up_options(tmp_path):
    data = write_synthetic(tmp_path / "d.h5", 4, seed=1, config=SMALL)
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--model", "sparse", "--data", str(data), "--steps", "5",
                                  "-o", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--steps" in result.output
    result = runner.invoke(main, ["train", "--model", "resnet", "--data", str(data), "-o", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--steps is required" in result.output
    result = runner.invoke(main, ["train", "--model", "sparse", "--data", str(data), "--holdout", "0.9",
                                  "--no-progress", "-o", str(tmp_path / "r")])
    assert result.exit_code == 1 and "cannot hold out" in result.output


def test_checkpoint_commands_know_the_sparse_model_has_no_weights(model, tmp_path):
    file = sparse.save(model, tmp_path / "s.safetensors",
                       Manifest(model="sparse", architecture_version=sparse.ARCHITECTURE_VERSION))
    runner = CliRunner()
    result = runner.invoke(main, ["checkpoint", "init", "--model", "sparse", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "'sparse' is not one of" in result.output
    result = runner.invoke(main, ["checkpoint", "upload", str(file), "--model", "sparse", "--format", "basf2",
                                  "--db", str(tmp_path / "c.db")])
    assert result.exit_code == 2 and "GANs only" in result.output
    result = runner.invoke(main, ["checkpoint", "show", str(file)])
    assert result.exit_code == 0 and "model: sparse" in result.output
