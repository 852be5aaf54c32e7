"""``pxdbg train``: train a generator on a pxd-digits sample into a run directory.

    pxdbg train --model sparse --data train.h5 -o runs/sparse
    pxdbg train --model sparse --data a.h5 b.h5 --validation heldout.h5 -o runs/sparse
    pxdbg train --model sparse-beam --data lumi0.5.h5 lumi1.h5 lumi2.h5 -o runs/sparse-beam
    pxdbg train --model resnet --data train.h5 --steps 2000 --batch 8 -o runs/resnet
    pxdbg train --model resnet --data train.h5 --steps 4000 --resume -o runs/resnet
    pxdbg train --model ieagan --data train.h5 --steps 300 --ema-decay 0.99 --ema-start 100 -o runs/ieagan

The sparse model is fitted in one pass over its training files (minutes on one core), with
a held-out validation (``--holdout`` of the events, or a ``--validation`` file) whose report
and plots go to ``validation/``. convnet and resnet train with WGAN-GP, ieagan with the
IEA-GAN objective (one event of 40 sensor images per step); their run directory receives
``checkpoints/``, ``metrics.jsonl``, ``config.json`` and the resumable training state. Every
run ends with the checkpoint ``<model>.safetensors`` (safetensors with a manifest), whose
path is printed last. The beam-conditioned sparse model (``sparse-beam``) is fitted the same
way to several files labelled with their beam conditions (``pxdbg dataset synth
--luminosity ...``, ``pxdbg dataset import-root --conditions ...``); files with equal
conditions are one sample, and each sample's held-out events validate it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click


@click.command("train")
@click.option("--model", required=True, type=click.Choice(["sparse", "sparse-beam", "convnet", "resnet", "ieagan"]),
              help="Generator to train (sparse-beam: several samples labelled with their beam conditions).")
@click.option("--data", "data", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Training sample (pxd-digits HDF5); sparse: several files may follow (--data A B ...).")
@click.argument("more_data", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--steps", type=click.IntRange(min=0), default=None,
              help="GANs: total generator steps (on --resume: the new total). Required for GANs.")
@click.option("--holdout", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="sparse: fraction of the events held out for validation [0.2; 0 with --validation].")
@click.option("--validation", type=click.Path(exists=True, dir_okay=False), default=None,
              help="sparse: a held-out sample to validate against, instead of holding out events.")
@click.option("--floor", "floor", type=click.Path(exists=True, dir_okay=False), default=None,
              help="sparse: a second held-out sample, for metrics beside their floor (see pxdbg validate).")
@click.option("--library-mb", type=click.FloatRange(min=1), default=None,
              help="sparse: size budget of the cluster library in the checkpoint, MB [36].")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Images per batch for convnet/resnet [8]; ieagan always uses one event (40 images).")
@click.option("--width", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Width multiplier of generator and discriminator [1.0 = published sizes].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learning rate of both networks [WGAN-GP 1e-4, IEA-GAN 5e-5].")
@click.option("--lr-g", type=click.FloatRange(min=0, min_open=True), default=None, help="Generator learning rate.")
@click.option("--lr-d", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Discriminator learning rate.")
@click.option("--n-critic", type=click.IntRange(min=1), default=None, help="Critic steps per generator step [5].")
@click.option("--ema-decay", type=click.FloatRange(min=0, max=1, max_open=True), default=None,
              help="ieagan: decay of the generator weight average that is shipped [0.9999]. The "
                   "published value averages over ~10000 steps; short runs need a smaller one "
                   "(0 ships the live weights).")
@click.option("--ema-start", type=click.IntRange(min=0), default=None,
              help="ieagan: step from which the average starts (before it, it copies the live "
                   "weights) [min(10000, steps // 2) of the first run].")
@click.option("--seed", type=int, default=None, help="Random seed [0].")
@click.option("--device", default="cpu", show_default=True, help="Torch device, e.g. cpu, cuda, cuda:1.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch.")
@click.option("--resume", is_flag=True, help="Continue the run in the output directory.")
@click.option("--validate-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Validate every K steps (0: only at the end).")
@click.option("--validate-events", type=click.IntRange(min=0), default=None,
              help="Events generated per validation [4]; 0 disables validation.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Write a checkpoint and the training state every K steps (0: only at the end).")
@click.option("--max-events", type=click.IntRange(min=1), default=None,
              help="Use only the first N events of the training sample.")
@click.option("--campaign", default=None, help="Background campaign recorded in the manifest.")
@click.option("--max-extrapolation", type=click.FloatRange(min=0), default=None,
              help="sparse-beam: how far beyond the training conditions generation may go unforced, in units "
                   "of each driver's largest trained value [0.5].")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--no-plots", is_flag=True,
              help="sparse, sparse-beam: write the held-out validation's report.json without its plots.")
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory.")
def train(model, data, more_data, steps, holdout, validation, floor, library_mb, batch, width, lr, lr_g, lr_d, n_critic,
          ema_decay, ema_start, seed, device, threads, resume, validate_every, validate_events, checkpoint_every,
          max_events, campaign, max_extrapolation, no_progress, no_plots, run_dir):
    """Train a generator and write its checkpoint (safetensors with a manifest)."""
    data = list(data) + list(more_data)
    if max_extrapolation is not None and model != "sparse-beam":
        raise click.UsageError("--max-extrapolation applies to the sparse-beam model only")
    if model in ("sparse", "sparse-beam"):
        gan_only = {"--steps": steps, "--batch": batch, "--width": width, "--lr": lr, "--lr-g": lr_g,
                    "--lr-d": lr_d, "--n-critic": n_critic, "--ema-decay": ema_decay, "--ema-start": ema_start,
                    "--resume": resume or None, "--threads": threads}
        given = [name for name, value in gan_only.items() if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)}: GAN options; the sparse model is fitted in one pass")
        if model == "sparse-beam":
            if validation or floor:
                raise click.UsageError("sparse-beam validates on each sample's held-out events (--holdout); "
                                       "--validation and --floor apply to the sparse model")
            _train_sparse_beam(data, run_dir, holdout=holdout, library_mb=library_mb, seed=seed,
                               max_events=max_events, campaign=campaign, validate_events=validate_events,
                               max_extrapolation=max_extrapolation, progress=not no_progress,
                               plots=not no_plots)
            return
        _train_sparse(data, run_dir, holdout=holdout, validation=validation, floor=floor, library_mb=library_mb,
                      seed=seed,
                      max_events=max_events, campaign=campaign, validate_events=validate_events,
                      progress=not no_progress, plots=not no_plots)
        return
    if no_plots:
        raise click.UsageError("--no-plots applies to the sparse models")
    if len(data) != 1:
        raise click.UsageError(f"{model} trains on one --data file, got {len(data)}")
    data = data[0]
    for name, value in (("--holdout", holdout), ("--validation", validation), ("--floor", floor),
                        ("--library-mb", library_mb)):
        if value is not None:
            raise click.UsageError(f"{name} applies to the sparse model only")
    if steps is None:
        raise click.UsageError(f"--steps is required to train {model}")
    import torch

    from ..models.common import check_device_usable
    from ..training.state import TrainingStateError, has_state, load_state
    from ..training.trainer import TrainConfig, Trainer

    try:
        torch_device = torch.device(device)
    except RuntimeError as error:
        raise click.BadParameter(f"{device!r} is not a torch device ({error})", param_hint="--device") from None
    try:  # here, so that a run directory is not even created
        check_device_usable(torch_device)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--device") from None
    if threads:
        torch.set_num_threads(threads)
    given = {"batch": batch, "width": width, "lr_g": lr_g if lr_g is not None else lr,
             "lr_d": lr_d if lr_d is not None else lr, "n_critic": n_critic, "ema_decay": ema_decay,
             "ema_start": ema_start, "seed": seed,
             "validate_events": validate_events, "max_events": max_events, "campaign": campaign}
    given = {k: v for k, v in given.items() if v is not None}
    try:
        if resume:
            if not has_state(run_dir):
                raise click.UsageError(f"--resume: {run_dir} holds no training state")
            _, info = load_state(run_dir)
            saved = TrainConfig.from_dict(info["config"])
            if saved.model != model:
                raise click.UsageError(f"--resume: {run_dir} trains {saved.model!r}, not {model!r}")
            changed = {k: v for k, v in given.items() if getattr(saved, k) != v}
            fixed = set(changed) - {"validate_events", "campaign"}
            if fixed:
                raise click.UsageError(
                    "--resume keeps the run's settings; these differ from the saved run: "
                    + ", ".join(f"{k}={changed[k]!r} (saved {getattr(saved, k)!r})" for k in sorted(fixed))
                )
            config = dataclasses.replace(saved, steps=steps, validate_every=validate_every,
                                         checkpoint_every=checkpoint_every, device=device, **changed)
        else:
            if has_state(run_dir):
                raise click.UsageError(f"{run_dir} already holds a run; use --resume or another directory")
            config = TrainConfig(model=model, steps=steps, device=device, validate_every=validate_every,
                                 checkpoint_every=checkpoint_every, **given)
        with Trainer(config, data, run_dir, resume=resume, progress=not no_progress) as trainer:
            final = trainer.train()
            metrics = trainer.metrics
    except (TrainingStateError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if metrics:
        click.echo("validation: " + json.dumps({k: round(v, 6) if isinstance(v, float) else v
                                                for k, v in metrics.items()}, sort_keys=True), err=True)
    click.echo(f"checkpoint: {Path(final)}")


def _train_sparse(data, run_dir, *, holdout, validation, floor, library_mb, seed, max_events, campaign,
                  validate_events, progress, plots) -> None:
    from ..digits import DigitsFormatError
    from ..training.sparse import DEFAULT_LIBRARY_MEGABYTES, SparseTrainConfig, train_sparse

    config = SparseTrainConfig(
        holdout=holdout if holdout is not None else (0.0 if validation else 0.2), seed=seed or 0,
        library_megabytes=library_mb or DEFAULT_LIBRARY_MEGABYTES, max_events=max_events, campaign=campaign,
        validate_events=validate_events or None)
    try:
        path = train_sparse(data, run_dir, config, validation=validation, floor=floor, progress=progress,
                            plots=plots)
    except (ValueError, DigitsFormatError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"{exc.strerror or exc} ({exc.filename or run_dir})") from exc
    from registry.checkpoint import read_manifest

    metrics = read_manifest(path).metrics
    shown = {k: round(v, 6) for k, v in metrics.items()
             if (k.startswith("heldout_") and "floor_ratio" not in k) or k == "fit_seconds"}
    ratios = {k.removeprefix("heldout_floor_ratio_"): round(v, 2) for k, v in metrics.items()
              if k.startswith("heldout_floor_ratio_")}
    if ratios:
        click.echo("held-out metric / floor: " + json.dumps(ratios, sort_keys=True), err=True)
    if shown:
        click.echo("validation: " + json.dumps(shown, sort_keys=True), err=True)
    click.echo(f"checkpoint: {path}")


def _train_sparse_beam(data, run_dir, *, holdout, library_mb, seed, max_events, campaign, validate_events,
                       max_extrapolation, progress, plots) -> None:
    from ..digits import DigitsFormatError
    from ..models.sparse_beam import DEFAULT_MAX_EXTRAPOLATION
    from ..training.sparse import DEFAULT_LIBRARY_MEGABYTES, SparseTrainConfig
    from ..training.sparse_beam import train_sparse_beam

    config = SparseTrainConfig(
        holdout=holdout if holdout is not None else 0.2, seed=seed or 0,
        library_megabytes=library_mb or DEFAULT_LIBRARY_MEGABYTES, max_events=max_events, campaign=campaign,
        validate_events=validate_events or None)
    limit = DEFAULT_MAX_EXTRAPOLATION if max_extrapolation is None else max_extrapolation
    try:
        path = train_sparse_beam(data, run_dir, config, max_extrapolation=limit, progress=progress, plots=plots)
    except (ValueError, DigitsFormatError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"{exc.strerror or exc} ({exc.filename or run_dir})") from exc
    from registry.beam import BeamConditions
    from registry.checkpoint import read_manifest

    manifest = read_manifest(path)
    for j, sample in enumerate(manifest.model_config["samples"]):
        held = sample.get("heldout", {})
        conditions = BeamConditions.from_mapping(sample["conditions"], f"sample {j}")
        line = f"sample {j}: {sample['training_events']} training events at {conditions.summary()}"
        if held:
            occupancy_error = held.get("occupancy_mean_abs_relative_error", float("nan"))
            line += (f"; held out: occupancy |rel. error| {occupancy_error:.1%}, "
                     f"Frechet {held.get('frechet_distance', float('nan')):.3g}")
        click.echo(line, err=True)
    click.echo(f"checkpoint: {path}")

