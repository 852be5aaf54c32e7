"""``pxdbg train``: data in canonical sensor order, the training step, checkpoints with
manifests, resuming, and the CLI. Models run at a tiny width so a step takes well under a
second on CPU (ieagan, with 40 full-size images per step, takes longer and is marked slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pxdbg.digits import DigitsWriter, dense_to_digits
from pxdbg.models import get_model
from pxdbg.sensors import N_SENSORS, sensor_id, sensor_name
from pxdbg.training.data import BatchSampler, TrainingSample, file_sha256
from pxdbg.training.discriminators import IEAGANDiscriminator, WGANCritic
from pxdbg.training.state import TrainingStateError, load_state
from pxdbg.training.trainer import TrainConfig, Trainer, train
from pxdbg.transforms import adc_to_model
from registry.checkpoint import read_checkpoint

TINY = 1 / 16  # generator/discriminator width for tests


def _write_sample(path, n_events, seed=0):
    rng = np.random.default_rng(seed)
    with DigitsWriter(path) as w:
        for _ in range(n_events):
            ev = np.zeros((N_SENSORS, 250, 768), np.uint8)
            for s in range(N_SENSORS):
                n = rng.poisson(60 if s < 16 else 25)
                ev[s, rng.integers(0, 250, n), rng.integers(0, 768, n)] = rng.integers(7, 256, n)
            w.append(dense_to_digits(ev))
    return path


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Two OpenMP threads on a busy 2-core machine spin against each other: one is faster.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory):
    return _write_sample(tmp_path_factory.mktemp("train") / "train.h5", 4)


def _wgan_config(**kw):
    base = dict(model="convnet", steps=2, batch=2, width=TINY, n_critic=1, validate_events=0, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def _params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


# ----------------------------------------------------------------------------------------
# data


def test_event_images_are_in_canonical_sensor_order(tmp_path):
    # Sensor i gets exactly i + 1 hits of charge 10 + i, so every image says who it is.
    ev = np.zeros((N_SENSORS, 250, 768), np.uint8)
    for s in range(N_SENSORS):
        ev[s, 100, np.arange(s + 1) * 7] = 10 + s
    path = tmp_path / "order.h5"
    with DigitsWriter(path) as w:
        w.append(dense_to_digits(ev))
    with TrainingSample(path) as sample:
        images, labels = sample.event_tensor(0)
    assert images.shape == (N_SENSORS, 1, 256, 768) and images.dtype == torch.float32
    assert labels.tolist() == list(range(N_SENSORS))
    for i, label in enumerate(labels.tolist()):
        hits = images[i, 0] > -1.0
        assert int(hits.sum()) == label + 1
        expected = adc_to_model(torch.full((250, 768), 10.0 + label))[3, 0]
        assert torch.allclose(images[i, 0][hits], expected)
    # Layer 2, ladder 10, sensor 1 is index 34: lexicographic sorting of the sensor names
    # ("2.10.1" < "2.2.1") would have put it elsewhere and given it another label.
    assert sensor_id(34) == (2, 10, 1)
    assert int((images[34, 0] > -1).sum()) == 35
    names = [sensor_name(i) for i in labels.tolist()]
    assert sorted(names) != names
    assert sorted(names).index("2.10.1") != 34


def test_single_images_come_from_the_requested_event_and_sensor(tmp_path):
    events = []
    for e in range(2):
        ev = np.zeros((N_SENSORS, 250, 768), np.uint8)
        for s in range(N_SENSORS):
            ev[s, e, s] = 50 + s
        events.append(dense_to_digits(ev))
    path = tmp_path / "two.h5"
    with DigitsWriter(path) as w:
        w.append_many(events, exp=[0, 0], run=[0, 0])
    with TrainingSample(path) as sample:
        images, labels = sample.image_tensor(np.array([1, 0, 1, 1]), np.array([39, 3, 3, 39]))
        assert labels.tolist() == [39, 3, 3, 39]
        for j, (e, s) in enumerate([(1, 39), (0, 3), (1, 3), (1, 39)]):
            hits = torch.nonzero(images[j, 0] > -1).tolist()
            assert hits == [[e + 3, s]]  # + 3 padding rows
        assert sample.reference() == f"two.h5 sha256:{file_sha256(path)}"
        sampler = BatchSampler(sample, seed=5)
        a = sampler.images(3)[0]
        sampler2 = BatchSampler(sample, seed=5)
        torch.testing.assert_close(a, sampler2.images(3)[0])


# ----------------------------------------------------------------------------------------
# discriminators


def test_discriminator_shapes():
    x = torch.randn(3, 1, 256, 768)
    assert WGANCritic(2)(x).shape == (3,)
    d = IEAGANDiscriminator(2, embed_dim=16)
    out, emb, prx = d(x, torch.tensor([0, 5, 39]))
    assert out.shape == (3,) and emb.shape == (3, 16) and prx.shape == (3, 16)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError):
        WGANCritic(2)(torch.randn(1, 1, 250, 768))
    # The GP critic has no normalisation layer that couples the samples of a batch.
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in WGANCritic(2).modules())


# ----------------------------------------------------------------------------------------
# training steps


@pytest.mark.parametrize("model", ["convnet", "resnet"])
def test_wgan_step_updates_generator_and_critic(sample_file, tmp_path, model):
    with Trainer(_wgan_config(model=model), sample_file, tmp_path / "run", progress=False) as tr:
        g0, d0 = _params(tr.generator), _params(tr.discriminator)
        out = tr.train_step()
        assert tr.step == 1
        assert set(out) >= {"d_loss", "g_loss", "gp", "wasserstein"} and all(np.isfinite(list(out.values())))
        g1, d1 = _params(tr.generator), _params(tr.discriminator)
    unchanged_g = [k for k in g0 if torch.equal(g0[k], g1[k])]
    assert not unchanged_g, f"generator parameters not updated by the G step: {unchanged_g}"
    assert any(not torch.equal(d0[k], d1[k]) for k in d0)


@pytest.mark.slow
def test_ieagan_step_updates_generator_every_step_and_checkpoint_loads(sample_file, tmp_path):
    # The public IEA-GAN code skips G's optimizer step with its own configuration; here
    # every generator parameter must move after a single step, and the EMA must follow.
    cfg = TrainConfig(model="ieagan", steps=1, width=TINY, validate_events=0, embed_dim=16, log_every=1)
    with Trainer(cfg, sample_file, tmp_path / "run", progress=False) as tr:
        g0, d0 = _params(tr.generator), _params(tr.discriminator)
        ema0 = {k: v.clone() for k, v in tr.ema.model.state_dict().items()}
        final = tr.train()
        g1, d1 = _params(tr.generator), _params(tr.discriminator)
        ema1 = tr.ema.model.state_dict()
    unchanged_g = [k for k in g0 if torch.equal(g0[k], g1[k])]
    assert not unchanged_g, f"generator parameters not updated by the G step: {unchanged_g}"
    assert any(not torch.equal(d0[k], d1[k]) for k in d0)
    assert any(not torch.equal(ema0[k], ema1[k]) for k in ema0)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("g_adv", "contra_g", "iea", "unif_g", "contra_d", "unif_d"):
        assert np.isfinite(record[key])
    # The shipped weights are the EMA ones, and they load into the model code.
    state, manifest = read_checkpoint(final)
    assert manifest.model == "ieagan" and manifest.training_steps == 1
    model = get_model("ieagan").Model(**manifest.model_config)
    model.load_state_dict(state, strict=True)
    for k, v in ema1.items():
        torch.testing.assert_close(state[k], v)


# ----------------------------------------------------------------------------------------
# end to end


def test_training_run_writes_a_loadable_checkpoint_with_manifest(sample_file, tmp_path):
    run = tmp_path / "run"
    cfg = _wgan_config(steps=2, validate_events=1, reference_events=2, checkpoint_every=1, campaign="demo")
    final = train(cfg, sample_file, run, progress=False)
    assert final == run / "convnet.safetensors" and final.is_file()
    assert (run / "checkpoints" / "convnet_step0000001.safetensors").is_file()
    state, manifest = read_checkpoint(final)
    module = get_model("convnet")
    assert manifest.model == "convnet"
    assert manifest.architecture_version == module.ARCHITECTURE_VERSION
    assert manifest.campaign == "demo"
    assert manifest.training_steps == 2
    assert manifest.training_dataset == f"train.h5 sha256:{file_sha256(sample_file)}"
    assert "torch" in manifest.software and "python" in manifest.software
    assert manifest.model_config == {"width": TINY}
    assert manifest.metrics["step"] == 2 and "charge_w1" in manifest.metrics
    model = module.Model(**manifest.model_config)
    model.load_state_dict(state, strict=True)
    model.eval()
    events = module.generate(model, torch.Generator().manual_seed(0), 1)
    assert events.shape == (1, N_SENSORS, 250, 768) and events.dtype == torch.uint8
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "losses"] == [1, 2]
    assert any(r["kind"] == "validation" for r in records)
    # The resumable state holds no pickle: a safetensors file and a JSON file.
    tensors, info = load_state(run)
    assert info["step"] == 2 and any(k.startswith("optim_g.") for k in tensors)


def test_resume_continues_at_the_right_step_with_identical_results(sample_file, tmp_path):
    straight = tmp_path / "straight"
    with Trainer(_wgan_config(steps=4), sample_file, straight, progress=False) as tr:
        tr.train()
        g_ref, d_ref = tr.generator.state_dict(), tr.discriminator.state_dict()

    split = tmp_path / "split"
    with Trainer(_wgan_config(steps=2), sample_file, split, progress=False) as tr:
        tr.train()
    with Trainer(_wgan_config(steps=4), sample_file, split, resume=True, progress=False) as tr:
        assert tr.step == 2
        tr.train()
        assert tr.step == 4
        g, d = tr.generator.state_dict(), tr.discriminator.state_dict()
    for k in g_ref:
        assert torch.equal(g_ref[k], g[k]), k
    for k in d_ref:
        assert torch.equal(d_ref[k], d[k]), k
    steps = [json.loads(line)["step"] for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    _, manifest = read_checkpoint(split / "convnet.safetensors")
    assert manifest.training_steps == 4


def test_resume_refuses_another_model_or_training_file(sample_file, tmp_path):
    run = tmp_path / "run"
    train(_wgan_config(steps=1), sample_file, run, progress=False)
    with pytest.raises(TrainingStateError, match="model"):
        Trainer(_wgan_config(model="resnet", steps=2), sample_file, run, resume=True, progress=False)
    other = _write_sample(tmp_path / "other.h5", 2, seed=9)
    with pytest.raises(TrainingStateError, match="not the file"):
        Trainer(_wgan_config(steps=2), other, run, resume=True, progress=False)
    with pytest.raises(TrainingStateError, match="nothing to resume"):
        Trainer(_wgan_config(steps=2), sample_file, tmp_path / "empty", resume=True, progress=False)
    # A tensor file and JSON file from different steps (a crash between the two writes).
    info = json.loads((run / "training_state.json").read_text())
    info["step"] = 7
    (run / "training_state.json").write_text(json.dumps(info))
    with pytest.raises(TrainingStateError, match="disagree"):
        load_state(run)


def test_config_validation():
    with pytest.raises(ValueError, match="unknown model"):
        TrainConfig(model="gan", steps=1).resolved()
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(model="convnet", steps=-1).resolved()
    with pytest.raises(ValueError, match="width"):
        TrainConfig(model="convnet", steps=1, width=0).resolved()
    c = TrainConfig(model="ieagan", steps=100).resolved()
    assert (c.lr_g, c.betas, c.adam_eps, c.ema_start, c.embed_dim) == (5e-5, (0.0, 0.999), 1e-6, 50, 1024)


def test_cli_train_and_resume(sample_file, tmp_path):
    from pxdbg.cli import main

    run = tmp_path / "cli_run"
    args = ["train", "--model", "resnet", "--data", str(sample_file), "--batch", "2", "--width", str(TINY),
            "--n-critic", "1", "--validate-events", "0", "--no-progress", "-o", str(run)]
    result = CliRunner().invoke(main, args + ["--steps", "1"])
    assert result.exit_code == 0, result.output
    assert f"checkpoint: {run / 'resnet.safetensors'}" in result.output
    # A second plain run into the same directory is refused; --resume continues it.
    again = CliRunner().invoke(main, args + ["--steps", "2"])
    assert again.exit_code != 0 and "--resume" in again.output
    resumed = CliRunner().invoke(main, ["train", "--model", "resnet", "--data", str(sample_file), "--steps", "2",
                                        "--resume", "--no-progress", "-o", str(run)])
    assert resumed.exit_code == 0, resumed.output
    _, manifest = read_checkpoint(run / "resnet.safetensors")
    assert manifest.training_steps == 2
    changed = CliRunner().invoke(main, ["train", "--model", "resnet", "--data", str(sample_file), "--steps", "3",
                                        "--batch", "4", "--resume", "-o", str(run)])
    assert changed.exit_code != 0 and "batch" in changed.output


def test_manifest_says_what_a_model_trained_on_the_synthetic_sample_is(tmp_path):
    from pxdbg.datasets.synthetic import write_synthetic

    synthetic = write_synthetic(tmp_path / "synth.h5", 2, seed=3)
    final = train(_wgan_config(steps=1), synthetic, tmp_path / "run", progress=False)
    _, manifest = read_checkpoint(final)
    assert manifest.description.startswith(
        "trained 1 step on CPU on the synthetic stand-in sample; not a physics model (pxdbg train: WGAN-GP")
    assert manifest.training_dataset == f"synth.h5 sha256:{file_sha256(synthetic)}"
    # A sample that is not the synthetic stand-in is named, and not called a stand-in.
    plain = _write_sample(tmp_path / "plain.h5", 1)
    final = train(_wgan_config(steps=2), plain, tmp_path / "run2", progress=False)
    description = read_checkpoint(final)[1].description
    assert description.startswith("trained 2 steps on CPU on sample plain.h5 (") and "synthetic" not in description


def test_cli_ema_settings_reach_the_run_and_are_kept_on_resume(sample_file, tmp_path):
    from pxdbg.cli import main

    run = tmp_path / "ema_run"
    args = ["train", "--model", "ieagan", "--data", str(sample_file), "--width", str(TINY), "--validate-events", "0",
            "--no-progress", "-o", str(run)]
    # Zero steps: builds the run (config, state, checkpoint) without a costly ieagan step.
    result = CliRunner().invoke(main, args + ["--steps", "0", "--ema-decay", "0.99", "--ema-start", "3"])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert (config["ema_decay"], config["ema_start"]) == (0.99, 3)
    with Trainer(TrainConfig(model="ieagan", steps=0, width=TINY), sample_file, run, resume=True,
                 progress=False) as tr:
        assert (tr.ema.decay, tr.ema.start) == (0.99, 3)
    changed = CliRunner().invoke(main, args + ["--steps", "1", "--resume", "--ema-decay", "0.9"])
    assert changed.exit_code != 0 and "ema_decay" in changed.output


def test_build_embedded_records_a_validation_report_in_the_manifest(sample_file, tmp_path):
    # scripts/build_embedded.py --validation MODEL=report.json: the shipped manifest says how
    # the checkpoint validated (heldout_* metrics), keeping the training metrics and weights.
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "build_embedded.py"
    spec = importlib.util.spec_from_file_location("build_embedded_script", script)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)

    final = train(_wgan_config(steps=1, validate_events=1, reference_events=1), sample_file, tmp_path / "run",
                  progress=False)
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"n_generated": 4, "n_reference": 8,
                                  "scalars": {"frechet_distance": 12.5, "charge_ks": 0.25}}))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    validated = build.with_validation(final, report, out_dir)
    state, manifest = read_checkpoint(validated)
    original_state, original = read_checkpoint(final)
    assert manifest.metrics["heldout_frechet_distance"] == 12.5 and manifest.metrics["heldout_charge_ks"] == 0.25
    assert (manifest.metrics["heldout_generated_events"], manifest.metrics["heldout_reference_events"]) == (4, 8)
    assert manifest.metrics["charge_w1"] == original.metrics["charge_w1"]  # training-time metrics kept
    assert (manifest.training_steps, manifest.description) == (original.training_steps, original.description)
    for k, v in original_state.items():
        assert torch.equal(state[k], v)
    report.write_text(json.dumps({"something": "else"}))
    with pytest.raises(ValueError, match="not a pxdbg validate report"):
        build.with_validation(final, report, out_dir)


@pytest.mark.parametrize("device, message", [
    ("bogus", "is not a torch device"),
    pytest.param("cuda", "no usable CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_cli_train_refuses_unusable_devices_before_anything_is_written(sample_file, tmp_path, device, message):
    from pxdbg.cli import main

    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--model", "convnet", "--data", str(sample_file), "--steps", "1",
                                       "--device", device, "--no-progress", "-o", str(run_dir)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not run_dir.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_trainer_refuses_cuda_without_it_before_writing(sample_file, tmp_path):
    with pytest.raises(ValueError, match="no usable CUDA device"):
        Trainer(TrainConfig(model="convnet", steps=1, device="cuda"), sample_file, tmp_path / "run")
    assert not (tmp_path / "run").exists()
