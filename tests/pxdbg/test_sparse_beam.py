"""The beam-conditioned sparse model: labelled samples, interpolation and extrapolation (and
refusal), rates that follow the conditions, checkpoints, and a run list whose runs carry
different conditions through the registry, the generator module and ``pxdbg generate``."""

from __future__ import annotations

import json
from dataclasses import replace

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conditions.iov import IntervalOfValidity as IoV
from conditions.store import open_store
from pxdbg.cli import main
from pxdbg.datasets.beam_labels import LABEL_ATTR, read_label
from pxdbg.datasets.synthetic import (SyntheticBackground, SyntheticConfig, beam_conditions_of,
                                      config_for_conditions, write_synthetic)
from pxdbg.digits import DigitsReader
from pxdbg.models import sparse, sparse_beam
from pxdbg.models.sparse_beam import OutOfTrainingRangeError
from pxdbg.module import PXDBackgroundGenerator
from pxdbg.training.sparse_beam import fit_sparse_beam, group_by_conditions, train_sparse_beam
from pxdbg.validation.metrics import summarize
from registry.admin import upload_checkpoint
from registry.beam import BeamConditions, upload_beam_conditions
from registry.campaigns import Campaign, campaign_tag, create_campaign
from registry.exceptions import ManifestMismatchError
from registry.manifest import Manifest

SMALL = SyntheticConfig(clusters_layer1=24, clusters_layer2=10, block_events=8)
GRID = ((0.5, 1.0), (1.0, 1.0), (2.0, 1.0), (1.0, 2.0))  # (luminosity, beam loss)


def at(lumi: float, loss: float = 1.0) -> SyntheticConfig:
    return replace(SMALL, luminosity=lumi, beam_loss=loss)


def conditions(lumi: float, loss: float = 1.0, **changes) -> BeamConditions:
    c = beam_conditions_of(at(lumi, loss))
    return c.model_copy(update=changes) if changes else c


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("beam")
    return [write_synthetic(root / f"s{i}.h5", 40, seed=10 + i, config=at(*point)) for i, point in enumerate(GRID)]


@pytest.fixture(scope="module")
def model(samples):
    return fit_sparse_beam(group_by_conditions(samples), seed=1)


def occupancy(events) -> float:
    return float(summarize(events).mean_occupancy.mean())


def test_files_carry_their_beam_conditions_and_group_into_samples(samples, tmp_path):
    assert read_label(samples[2]) == conditions(2.0)
    assert config_for_conditions(conditions(2.0, 2.0), SMALL) == at(2.0, 2.0)  # label <-> synthetic knobs
    groups = group_by_conditions(samples + [samples[0]])
    assert [len(g.sources) for g in groups] == [2, 1, 1, 1]  # equal conditions: one sample
    # an unlabelled file, or only one condition, cannot train the conditioned model
    bare = write_synthetic(tmp_path / "bare.h5", 4, seed=1, config=SMALL)
    with h5py.File(bare, "r+") as f:
        del f.attrs[LABEL_ATTR]
    with pytest.raises(ValueError, match="carries no beam conditions.*--luminosity"):
        group_by_conditions([samples[0], bare])
    with pytest.raises(ValueError, match="at least two samples with different beam conditions"):
        fit_sparse_beam(group_by_conditions([samples[0]]))
    with h5py.File(bare, "r+") as f:
        f.attrs[LABEL_ATTR] = json.dumps({"luminosity": -1})
    with pytest.raises(ValueError, match="attribute beam_conditions: field 'luminosity'"):
        read_label(bare)


def test_interpolation_uses_the_nearest_samples(model):
    assert model.n_samples == 4 and model.n_training_events == 160
    at_sample = model.set_conditions(conditions(1.0, 2.0))
    assert at_sample.status == "interpolation" and at_sample.weights[3] == pytest.approx(1.0)
    assert np.allclose(at_sample.mean_counts, model.sample_means[3])
    between = model.set_conditions(conditions(1.5))
    assert between.status == "interpolation" and between.excess == 0.0
    assert np.allclose(between.weights, [0, 0.5, 0.5, 0], atol=1e-6)
    assert np.allclose(between.mean_counts, 0.5 * (model.sample_means[1] + model.sample_means[2]))
    assert "interpolation" in between.describe() and "50% sample 1" in between.describe()


def test_extrapolation_is_said_and_far_outside_is_refused_unless_forced(model):
    edge = model.set_conditions(conditions(2.4))
    assert edge.status == "extrapolation" and edge.excess_driver == "luminosity"
    assert edge.excess == pytest.approx(0.2) and not edge.forced
    assert "EXTRAPOLATION" in edge.describe() and "20%" in edge.describe()
    # the rates go on along the fitted luminosity term: more clusters than at the edge sample
    assert edge.mean_counts.sum() > model.sample_means[2].sum()
    with pytest.raises(OutOfTrainingRangeError, match=r"luminosity.*150%.*--force-conditions"):
        model.set_conditions(conditions(5.0))
    assert model.fit is edge  # a refused request leaves the model as it was
    forced = model.set_conditions(conditions(5.0), force=True)
    assert forced.forced and forced.excess == pytest.approx(1.5)
    assert model.set_conditions(conditions(5.0), max_extrapolation=2.0).forced is False
    with pytest.raises(OutOfTrainingRangeError, match="not even forced"):
        model.set_conditions(conditions(30.0), force=True)  # 1400%: a typo, not a run
    # a term the samples never varied cannot be extrapolated
    with pytest.raises(OutOfTrainingRangeError, match="injection fraction"):
        model.set_conditions(conditions(1.0, injection_fraction=0.2))
    # the rings' currents in another ratio than trained: outside, along a beam-loss driver
    skewed = model.set_conditions(conditions(1.0, ler_current=1400.0))
    assert skewed.status == "extrapolation" and skewed.excess_driver == "ler_beam_loss"


def test_events_are_valid_and_depend_only_on_key_and_conditions(model):
    model.fit = None
    with pytest.raises(RuntimeError, match="no beam conditions set"):
        model.generate([(1, 0)])
    model.set_conditions(conditions(1.5))
    keys = [(4, i) for i in range(6)]
    together = model.generate_events(keys)
    alone = [model.generate_events([k])[0] for k in reversed(keys)][::-1]
    for a, b in zip(together, alone):
        a.validate()
        assert len(a) > 0 and np.array_equal(a.pixel_key, b.pixel_key) and np.array_equal(a.charge, b.charge)
    model.set_conditions(conditions(0.75))
    assert not np.array_equal(model.generate_events(keys[:1])[0].pixel_key, together[0].pixel_key)


def test_rates_and_cluster_mix_follow_the_conditions(model):
    made, truth = {}, {}
    for lumi in (0.75, 1.75):
        model.set_conditions(conditions(lumi))
        made[lumi] = summarize(model.generate_events([(8, i) for i in range(60)]))
        truth[lumi] = summarize(SyntheticBackground(at(lumi), seed=int(lumi * 100)).generate(60))
    ratio_made = made[1.75].mean_occupancy.mean() / made[0.75].mean_occupancy.mean()
    ratio_true = truth[1.75].mean_occupancy.mean() / truth[0.75].mean_occupancy.mean()
    assert ratio_true > 1.4 and abs(ratio_made / ratio_true - 1) < 0.12, (ratio_made, ratio_true)
    # more luminosity: a larger share of compact low-charge clusters (feature 42: mean cluster size)
    for summary in (made, truth):
        assert summary[1.75].features[:, 42].mean() < summary[0.75].features[:, 42].mean()


def test_checkpoint_round_trip_and_model_mismatch(model, samples, tmp_path):
    manifest = Manifest(model="sparse-beam", architecture_version=sparse_beam.ARCHITECTURE_VERSION,
                        model_config={"max_extrapolation": 0.3})
    path = sparse_beam.save(model, tmp_path / "beam.safetensors", manifest)
    loaded = sparse_beam.load(path)
    assert loaded.max_extrapolation == 0.3 and loaded.manifest == manifest
    for m in (model, loaded):
        m.set_conditions(conditions(1.5))
    a, b = model.generate_events([(3, 1)])[0], loaded.generate_events([(3, 1)])[0]
    assert np.array_equal(a.pixel_key, b.pixel_key) and np.array_equal(a.charge, b.charge)
    with pytest.raises(OutOfTrainingRangeError):  # the checkpoint's own limit (0.3)
        loaded.set_conditions(conditions(2.8))
    with pytest.raises(ManifestMismatchError, match="sparse-beam"):
        sparse.load(path)
    plain = sparse.save(model.base, tmp_path / "plain.safetensors",
                        Manifest(model="sparse", architecture_version=sparse.ARCHITECTURE_VERSION))
    with pytest.raises(ManifestMismatchError):
        sparse_beam.load(plain)


def test_fixed_conditions_in_the_module_and_usage_errors(model, tmp_path):
    path = sparse_beam.save(model, tmp_path / "beam.safetensors",
                            Manifest(model="sparse-beam", architecture_version=1))
    gen = PXDBackgroundGenerator(checkpoint=path, seed=5, beam_conditions=conditions(1.5).to_dict())
    gen.initialize()
    assert gen.model == "sparse-beam" and gen.conditions_fit.status == "interpolation"
    assert len(gen.events(2)) == 2
    record = gen.conditions_record()
    assert record["source"] == "given" and record["values"]["luminosity"] == 1.5
    with pytest.raises(ValueError, match="max_extrapolation"):
        PXDBackgroundGenerator(checkpoint=path, max_extrapolation=-1)
    far = PXDBackgroundGenerator(checkpoint=path, seed=5, beam_conditions=conditions(9.0))
    with pytest.raises(OutOfTrainingRangeError):
        far.initialize()
    runner = CliRunner()
    result = runner.invoke(main, ["generate", "--model", "sparse", "--force-conditions", "-o",
                                  str(tmp_path / "x.h5")])
    assert result.exit_code == 2 and "conditioned models" in result.output
    result = runner.invoke(main, ["generate", "--checkpoint", str(path), "-n", "2", "--no-progress", "--seed", "1",
                                  "--beam-conditions", str(_write(tmp_path / "far.json", conditions(9.0))),
                                  "-o", str(tmp_path / "far.h5")])
    assert result.exit_code == 1 and "too far outside" in result.output and not (tmp_path / "far.h5").exists()


def _write(path, c: BeamConditions):
    path.write_text(c.to_json())
    return path


def test_a_run_list_spanning_two_conditions(model, tmp_path, monkeypatch):
    """Runs 1-2 at luminosity 0.75, runs 3-4 at 1.75 (payload BeamConditions, two IoVs in the
    campaign's tag): occupancy rises from the first runs to the last by about the ratio of the
    synthetic truth, and the output records each run's conditions."""
    monkeypatch.setenv("CONDITIONS_CACHE_DIR", str(tmp_path / "cache"))
    checkpoint = sparse_beam.save(model, tmp_path / "beam.safetensors",
                                  Manifest(model="sparse-beam", architecture_version=1, campaign="mc17"))
    db = tmp_path / "c.db"
    with open_store(db) as store:
        create_campaign(store, Campaign(name="mc17"))
        upload_checkpoint(store, checkpoint, model="sparse-beam", campaign="mc17", iov=IoV(0, 0, -1, -1))
        upload_beam_conditions(store, conditions(0.75), tag=campaign_tag("mc17"), iov=IoV(0, 1, 0, 2))
        upload_beam_conditions(store, conditions(1.75), tag=campaign_tag("mc17"), iov=IoV(0, 3, 0, 4))
        store.set_tag_state(campaign_tag("mc17"), "TESTING")
    out = tmp_path / "bg.h5"
    result = CliRunner().invoke(main, ["generate", "--model", "sparse-beam", "--campaign", "mc17", "--source", str(db),
                                       "--runs", "0:1-4", "-n", "30", "--seed", "3", "--no-progress", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.count("beam conditions L 0.75e34") == 1 and result.output.count("L 1.75e34") == 1
    with DigitsReader(out) as reader:
        runs = np.asarray(reader.run)
        events = [reader.event(i) for i in range(reader.n_events)]
        from pxdbg import provenance

        document = provenance.read(reader)
    low = occupancy([e for e, r in zip(events, runs) if r <= 2])
    high = occupancy([e for e, r in zip(events, runs) if r >= 3])
    truth = (occupancy(SyntheticBackground(at(1.75), seed=1).generate(60))
             / occupancy(SyntheticBackground(at(0.75), seed=2).generate(60)))
    assert abs((high / low) / truth - 1) < 0.12, (high / low, truth)
    records = {r["run"]: r["beam_conditions"] for r in document["runs"]}
    assert [records[r]["values"]["luminosity"] for r in (1, 2, 3, 4)] == [0.75, 0.75, 1.75, 1.75]
    assert records[1]["iov"] == [0, 1, 0, 2] and records[3]["iov"] == [0, 3, 0, 4]
    assert records[3]["payload"] == "BeamConditions" and records[3]["revision"] == 2
    assert all(records[r]["status"] == "interpolation" for r in records)
    info = CliRunner().invoke(main, ["dataset", "info", str(out)])
    assert "beam conditions per run:" in info.output and "0/3: L 1.75e34" in info.output


def test_train_command_and_labels_from_the_command_line(samples, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["dataset", "synth", "-n", "3", "--luminosity", "1.5", "--beam-loss", "2",
                                  "--no-progress", "-o", str(tmp_path / "a.h5")])
    assert result.exit_code == 0, result.output
    assert read_label(tmp_path / "a.h5") == beam_conditions_of(SyntheticConfig(luminosity=1.5, beam_loss=2.0))
    run_dir = tmp_path / "run"
    result = runner.invoke(main, ["train", "--model", "sparse-beam", "--data", *map(str, samples[:3]),
                                  "--validate-events", "4", "--no-progress", "--no-plots", "-o", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.count("held out: occupancy") == 3
    loaded = sparse_beam.load(run_dir / "sparse-beam.safetensors")
    assert loaded.n_samples == 3 and loaded.manifest.demo  # synthetic: a demo checkpoint
    assert len(loaded.manifest.model_config["samples"]) == 3
    report = json.loads((run_dir / "validation" / "sample-2" / "report.json").read_text())
    assert report["inputs"]["conditions"]["luminosity"] == 2.0 and report["n_generated"] == 4
    assert not list((run_dir / "validation").rglob("*.png"))  # --no-plots
    with pytest.raises(ValueError, match="already holds"):
        train_sparse_beam(samples[:3], run_dir)


def test_import_root_labels_real_overlay_files(tmp_path):
    from pxdbg.datasets.root_import import write_basf2_like_root

    root = write_basf2_like_root(tmp_path / "bg.root", SyntheticBackground(SMALL, 1).generate(3))
    runner = CliRunner()
    args = ["dataset", "import-root", str(root), "--no-progress", "-o", str(tmp_path / "bg.h5")]
    result = runner.invoke(main, args + ["--luminosity", "2.2", "--her-current", "1100", "--ler-current", "1300",
                                         "--injection-fraction", "0.05"])
    assert result.exit_code == 0 and "labelled with beam conditions" in result.output, result.output
    assert read_label(tmp_path / "bg.h5").values() == (2.2, 1100.0, 1300.0, 0.05)
    result = runner.invoke(main, args + ["--luminosity", "2.2"])
    assert result.exit_code == 2 and "missing --her-current" in result.output
    result = runner.invoke(main, args + ["--luminosity", "2.2", "--her-current", "-1", "--ler-current", "1300",
                                         "--injection-fraction", "0.05"])
    assert result.exit_code == 1 and "field 'her_current'" in result.output
