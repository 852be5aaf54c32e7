"""The training loop behind ``pxdbg train``.

One :class:`Trainer` runs one of two objectives, chosen by the model:

- ``convnet``, ``resnet`` (unconditional, one image per latent): WGAN-GP. A training step
  is ``n_critic`` critic updates on batches of ``batch`` random sensor images, then one
  generator update.
- ``ieagan``: the IEA-GAN objective. A step takes one real event (40 images, labels 0..39
  in canonical sensor order) and one generated event; the discriminator minimises hinge
  + 2C + uniformity losses (on DiffAugment-ed images, real and fake alike), then the
  generator minimises hinge + 2C + IEA (KL) + uniformity losses + orthogonal
  regularisation, and its EMA is updated.

The generator's optimizer step runs on every step, unconditionally (the public IEA-GAN code
has it inside ``if clip_norm is not None``, which its own configuration never enters).

A run directory holds ``config.json``, ``metrics.jsonl`` (losses and validation),
``training_state.{safetensors,json}`` (everything needed to resume: weights, EMA,
optimizers, step, random states) and ``checkpoints/`` (generator weights with a manifest,
as :func:`registry.checkpoint.write_checkpoint` writes them). The final generator
(the EMA weights for ieagan) is ``<model>.safetensors`` in the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from registry.checkpoint import write_checkpoint
from registry.manifest import Manifest, software_versions

from ..models import get_model
from ..models.common import check_device_usable
from . import losses
from .data import BatchSampler, TrainingSample
from .diffaugment import diff_augment
from .discriminators import IEAGANDiscriminator, WGANCritic
from .ema import EMA
from .state import flatten_optimizer, has_state, load_state, save_state, unflatten_optimizer, TrainingStateError

log = logging.getLogger(__name__)

WGAN_MODELS = ("convnet", "resnet")
#: Narrower discriminators than this train faster without oneDNN convolutions on CPU.
ONEDNN_MIN_CHANNELS = 16
IEAGAN_MODELS = ("ieagan",)


@dataclass
class TrainConfig:
    """Hyper-parameters of a run. ``None`` means "the objective's default" (see
    :meth:`resolved`); the resolved values are what ``config.json`` records."""

    model: str
    steps: int
    batch: int = 8  # images per critic/generator batch (WGAN-GP); ieagan always uses one event
    width: float = 1.0  # generator and discriminator width; 1.0 = the published sizes
    seed: int = 0
    lr_g: float | None = None  # WGAN-GP 1e-4, IEA-GAN 5e-5
    lr_d: float | None = None
    betas: tuple[float, float] | None = None  # WGAN-GP (0.0, 0.9), IEA-GAN (0.0, 0.999)
    adam_eps: float | None = None  # WGAN-GP 1e-8, IEA-GAN 1e-6
    # WGAN-GP
    n_critic: int = 5
    gp_lambda: float = 10.0
    # IEA-GAN (defaults from the public IEA-GAN configuration)
    diffaugment: str = "color,translation,cutout"
    contra_lambda: float = 1.0
    iea_lambda: float = 1.0
    unif_lambda: float = 0.1
    g_ortho: float = 1e-4
    temperature: float = 1.0
    embed_dim: int | None = None  # 1024 at width 1
    projection: bool = True
    ema_decay: float = 0.9999
    ema_start: int | None = None  # IEA-GAN uses 10000; None: min(10000, steps // 2)
    # bookkeeping
    validate_every: int = 0  # 0: validate only at the end (when validate_events > 0)
    validate_events: int = 4
    reference_events: int = 64
    checkpoint_every: int = 0  # 0: only the final checkpoint
    log_every: int = 10
    max_events: int | None = None  # use only the first events of the training file
    campaign: str | None = None
    device: str = "cpu"
    # oneDNN (mkldnn) CPU convolutions: None = on for the published widths, off for narrow
    # models, where PyTorch's plain kernels were ~3x faster on this machine class
    # (benchmarks/bench_train.py).
    onednn: bool | None = None

    def resolved(self) -> "TrainConfig":
        if self.model not in WGAN_MODELS + IEAGAN_MODELS:
            raise ValueError(f"unknown model {self.model!r} (trainable: {', '.join(WGAN_MODELS + IEAGAN_MODELS)})")
        for name in ("steps", "batch", "n_critic", "seed", "validate_every", "validate_events",
                     "checkpoint_every", "log_every", "reference_events"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.batch < 1 or self.n_critic < 1:
            raise ValueError("batch and n_critic must be >= 1")
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width!r}")
        wgan = self.model in WGAN_MODELS
        c = dataclasses.replace(self)
        c.lr_g = (1e-4 if wgan else 5e-5) if c.lr_g is None else float(c.lr_g)
        c.lr_d = (1e-4 if wgan else 5e-5) if c.lr_d is None else float(c.lr_d)
        c.betas = ((0.0, 0.9) if wgan else (0.0, 0.999)) if c.betas is None else tuple(c.betas)
        c.adam_eps = (1e-8 if wgan else 1e-6) if c.adam_eps is None else float(c.adam_eps)
        if c.embed_dim is None:
            c.embed_dim = max(8, int(round(1024 * self.width)))
        if c.ema_start is None:
            c.ema_start = min(10000, self.steps // 2)
        if c.onednn is None:
            c.onednn = discriminator_channels(self.width) >= ONEDNN_MIN_CHANNELS
        return c

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(d["betas"]) if d["betas"] is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        if kwargs.get("betas") is not None:
            kwargs["betas"] = tuple(kwargs["betas"])
        return cls(**kwargs)


def model_config(model: str, width: float) -> dict[str, Any]:
    """Constructor arguments of the generator at a given width (recorded in the manifest
    so that a loader can build a model whose shapes match)."""
    if model in WGAN_MODELS:
        return {"width": float(width)}
    return {"ch": max(1, int(round(32 * width)))}


def discriminator_channels(width: float) -> int:
    return max(1, int(round(32 * width)))


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


class Trainer:
    """Trains one model on one pxd-digits file into ``run_dir``.

    ``resume=True`` continues from the training state in ``run_dir`` (same model, width and
    training file; ``config.steps`` may be raised to train further).
    """

    def __init__(self, config: TrainConfig, data: str | Path, run_dir: str | Path, *, resume: bool = False,
                 progress: bool = True):
        check_device_usable(torch.device(config.device))  # before anything is written
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "checkpoints").mkdir(exist_ok=True)
        self.progress = progress
        saved_info = None
        if resume:
            if not has_state(self.run_dir):
                raise TrainingStateError(f"{self.run_dir}: nothing to resume (no training state)")
            saved_tensors, saved_info = load_state(self.run_dir)
            saved = TrainConfig.from_dict(saved_info["config"])
            for name in ("model", "width", "batch", "n_critic", "embed_dim", "projection"):
                if name == "embed_dim" and config.embed_dim is None:
                    continue
                if getattr(config, name) != getattr(saved, name):
                    raise TrainingStateError(
                        f"cannot resume: {name} is {getattr(config, name)!r} here but "
                        f"{getattr(saved, name)!r} in {self.run_dir}"
                    )
            # Everything but the run length and bookkeeping comes from the saved run.
            config = dataclasses.replace(
                saved, steps=config.steps, validate_every=config.validate_every,
                checkpoint_every=config.checkpoint_every, device=config.device, log_every=config.log_every,
                validate_events=config.validate_events, campaign=config.campaign,
            )
        self.config = config.resolved()
        c = self.config
        self.device = torch.device(c.device)
        self.module = get_model(c.model)
        self.wgan = c.model in WGAN_MODELS

        self.sample = TrainingSample(data, max_events=c.max_events)
        if saved_info is not None and saved_info.get("data_sha256") != self.sample.sha256:
            raise TrainingStateError(
                f"cannot resume: {self.sample.path.name} is not the file this run was trained on "
                f"(sha256 {self.sample.sha256[:12]}... vs {str(saved_info.get('data_sha256'))[:12]}...)"
            )

        torch.manual_seed(c.seed)
        self.sampler = BatchSampler(self.sample, seed=c.seed + 1)
        self.model_config = model_config(c.model, c.width)
        self.generator = self.module.Model(**self.model_config).to(self.device)
        if self.wgan:
            self.discriminator = WGANCritic(discriminator_channels(c.width)).to(self.device)
        else:
            self.discriminator = IEAGANDiscriminator(discriminator_channels(c.width), embed_dim=c.embed_dim,
                                                     projection=c.projection).to(self.device)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=c.lr_g, betas=c.betas, eps=c.adam_eps)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=c.lr_d, betas=c.betas, eps=c.adam_eps)
        self.ema = None if self.wgan else EMA(self.generator, decay=c.ema_decay, start=c.ema_start)
        self.step = 0
        self.metrics: dict[str, float] = {}
        self._reference_summary = None
        if saved_info is not None:
            self._restore(saved_tensors, saved_info)
        with open(self.run_dir / "config.json", "w") as f:
            json.dump(self.config.to_dict(), f, indent=1, sort_keys=True)

    # ------------------------------------------------------------------------------------
    # one training step

    def _latents(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.module.LATENT_DIM, device=self.device)

    def _set_requires_grad(self, module: torch.nn.Module, flag: bool) -> None:
        for p in module.parameters():
            p.requires_grad_(flag)

    def train_step(self) -> dict[str, float]:
        """One generator step (with its discriminator updates); returns the losses."""
        previous = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = bool(self.config.onednn) or self.device.type != "cpu"
        try:
            out = self._wgan_step() if self.wgan else self._ieagan_step()
        finally:
            torch.backends.mkldnn.enabled = previous
        self.step += 1
        return {k: float(v.detach()) for k, v in out.items()}

    def _wgan_step(self) -> dict[str, torch.Tensor]:
        c, G, D = self.config, self.generator, self.discriminator
        self._set_requires_grad(D, True)
        for _ in range(c.n_critic):
            real, _ = self.sampler.images(c.batch)
            real = real.to(self.device)
            with torch.no_grad():
                fake = G(self._latents(c.batch))
            self.opt_d.zero_grad(set_to_none=True)
            d_real, d_fake = D(real), D(fake)
            wd = losses.wgan_critic_loss(d_real, d_fake)
            gp = losses.gradient_penalty(D, real, fake)
            (wd + c.gp_lambda * gp).backward()
            self.opt_d.step()
        # The critic is fixed during the generator update: no gradients accumulate in it.
        self._set_requires_grad(D, False)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss = losses.wgan_generator_loss(D(G(self._latents(c.batch))))
        g_loss.backward()
        self.opt_g.step()
        self._set_requires_grad(D, True)
        return {"d_loss": wd + c.gp_lambda * gp, "wasserstein": -wd, "gp": gp, "g_loss": g_loss}

    def _ortho_weights(self) -> list[torch.Tensor]:
        # BigGAN/IEA-GAN exclude the shared class embedding: orthogonality between class
        # vectors is not wanted.
        skip = {id(m.weight) for m in self.generator.modules() if isinstance(m, torch.nn.Embedding)}
        return [p for p in self.generator.parameters() if p.dim() >= 2 and p.requires_grad and id(p) not in skip]

    def _ieagan_step(self) -> dict[str, torch.Tensor]:
        c, G, D = self.config, self.generator, self.discriminator
        real, labels = self.sampler.event()
        real, labels = real.to(self.device), labels.to(self.device)

        # Discriminator: hinge + 2C + uniformity on the real embeddings.
        self._set_requires_grad(D, True)
        with torch.no_grad():
            fake = G(self._latents(labels.shape[0]), labels)
        self.opt_d.zero_grad(set_to_none=True)
        d_fake, _, _ = D(diff_augment(fake, c.diffaugment), labels)
        d_real, emb_real, prx_real = D(diff_augment(real, c.diffaugment), labels)
        loss_real, loss_fake = losses.hinge_discriminator_loss(d_real, d_fake)
        contra_d = losses.conditional_contrastive_loss(emb_real, prx_real, labels, temperature=c.temperature)
        unif_d = losses.uniformity_loss(emb_real)
        d_loss = loss_real + loss_fake + c.contra_lambda * contra_d + c.unif_lambda * unif_d
        d_loss.backward()
        self.opt_d.step()

        # Generator: hinge + 2C + IEA KL (against the real event's relations) + uniformity
        # + orthogonal regularisation. D is frozen; its real embeddings are a fixed target.
        self._set_requires_grad(D, False)
        self.opt_g.zero_grad(set_to_none=True)
        fake = G(self._latents(labels.shape[0]), labels)
        g_out, emb_fake, prx_fake = D(diff_augment(fake, c.diffaugment), labels)
        adv = losses.hinge_generator_loss(g_out)
        contra_g = losses.conditional_contrastive_loss(emb_fake, prx_fake, labels, temperature=c.temperature)
        iea = losses.intra_event_kl_loss(emb_fake, emb_real.detach())
        unif_g = losses.uniformity_loss(emb_fake)
        g_loss = adv + c.contra_lambda * contra_g + c.iea_lambda * iea + c.unif_lambda * unif_g
        if c.g_ortho > 0:
            g_loss = g_loss + c.g_ortho * losses.orthogonal_penalty(self._ortho_weights())
        g_loss.backward()
        self.opt_g.step()  # every step, unconditionally
        self._set_requires_grad(D, True)
        self.ema.update(self.step)
        return {"d_loss": d_loss, "d_real": loss_real, "d_fake": loss_fake, "contra_d": contra_d,
                "unif_d": unif_d, "g_loss": g_loss, "g_adv": adv, "contra_g": contra_g, "iea": iea,
                "unif_g": unif_g}

    # ------------------------------------------------------------------------------------
    # the loop

    def train(self) -> Path:
        """Train up to ``config.steps``; returns the path of the final generator checkpoint."""
        from tqdm import tqdm

        c = self.config
        start = self.step
        bar = tqdm(total=c.steps, initial=start, desc=f"train {c.model}", unit="step", disable=not self.progress,
                   dynamic_ncols=True)
        t0 = time.perf_counter()
        try:
            while self.step < c.steps:
                losses_now = self.train_step()
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in losses_now.items() if k in ("d_loss", "g_loss")})
                if c.log_every and (self.step % c.log_every == 0 or self.step == c.steps):
                    self._log({"step": self.step, "kind": "losses", **losses_now,
                               "seconds_per_step": (time.perf_counter() - t0) / max(1, self.step - start)})
                if c.validate_every and self.step % c.validate_every == 0 and self.step < c.steps:
                    self.validate()
                if c.checkpoint_every and self.step % c.checkpoint_every == 0 and self.step < c.steps:
                    self.save_checkpoint()
                    self.save_state()
        finally:
            bar.close()
        if c.validate_events and (not self.metrics or self.metrics.get("step") != self.step):
            self.validate()
        self.save_state()
        final = self.save_checkpoint()
        final_path = self.run_dir / f"{c.model}.safetensors"
        final_path.write_bytes(final.read_bytes())
        return final_path

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    # ------------------------------------------------------------------------------------
    # validation

    def export_generator(self) -> torch.nn.Module:
        """The generator that is shipped: the EMA weights for ieagan, the live ones otherwise."""
        return self.ema.model if self.ema is not None else self.generator

    def validate(self) -> dict[str, float]:
        """Generate ``validate_events`` events, compare them with the training sample's first
        ``reference_events`` events using :mod:`pxdbg.validation`, log and keep the scalars
        (they go into the next checkpoint's manifest)."""
        from ..validation import compare, summarize, summarize_file

        c = self.config
        if c.validate_events < 1:
            return {}
        if self._reference_summary is None:
            self._reference_summary = summarize_file(self.sample.path,
                                                     max_events=min(c.reference_events, self.sample.n_events))
        g = self.export_generator()
        was_training = g.training
        g.eval()
        try:
            gen = torch.Generator().manual_seed(c.seed + 2)
            events = self.module.generate(g, gen, c.validate_events)
        finally:
            g.train(was_training)
        report = compare(summarize([events.numpy()]), self._reference_summary)
        scalars = _finite(report.scalars())
        self.metrics = {**scalars, "step": self.step, "validation_events": c.validate_events,
                        "reference_events": self._reference_summary.n_events}
        self._log({"kind": "validation", **self.metrics})
        return self.metrics

    # ------------------------------------------------------------------------------------
    # checkpoints and resumable state

    def manifest(self) -> Manifest:
        c = self.config
        return Manifest(
            model=c.model,
            architecture_version=int(self.module.ARCHITECTURE_VERSION),
            campaign=c.campaign,
            training_dataset=self.sample.reference(),
            training_steps=self.step,
            metrics={k: float(v) for k, v in self.metrics.items()},
            software=software_versions(),
            model_config=dict(self.model_config),
            description=self.description(),
        )

    def description(self) -> str:
        """What the checkpoint is, in words: steps, device and objective, and, for the
        synthetic stand-in sample, that it is not a physics model."""
        c = self.config
        device = self.device.type.upper() if self.device.type in ("cpu", "cuda") else self.device.type
        on = "the synthetic stand-in sample" if self.sample.synthetic else f"sample {self.sample.path.name}"
        text = f"trained {self.step} step{'' if self.step == 1 else 's'} on {device} on {on}"
        if self.sample.synthetic:
            text += "; not a physics model"
        objective = "WGAN-GP" if self.wgan else "IEA-GAN objective, EMA weights"
        batch = f"batch {c.batch}, n_critic {c.n_critic}" if self.wgan else "one event (40 images) per step"
        return f"{text} (pxdbg train: {objective}, {batch}, width {c.width:g}, seed {c.seed})"

    def save_checkpoint(self) -> Path:
        """Generator weights (EMA for ieagan) with the manifest, ``checkpoints/<model>_step<N>``."""
        path = self.run_dir / "checkpoints" / f"{self.config.model}_step{self.step:07d}.safetensors"
        write_checkpoint(path, self.export_generator().state_dict(), self.manifest())
        return path

    def save_state(self) -> None:
        tensors: dict[str, torch.Tensor] = {}
        for prefix, sd in (("generator", self.generator.state_dict()),
                           ("discriminator", self.discriminator.state_dict())):
            tensors.update({f"{prefix}.{k}": v for k, v in sd.items()})
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        tg, rest_g = flatten_optimizer("optim_g", self.opt_g.state_dict())
        td, rest_d = flatten_optimizer("optim_d", self.opt_d.state_dict())
        tensors.update(tg)
        tensors.update(td)
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.sampler"] = self.sampler.get_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        info = {"step": self.step, "config": self.config.to_dict(), "optim_g": rest_g, "optim_d": rest_d,
                "data_sha256": self.sample.sha256, "data_file": self.sample.path.name,
                "metrics": self.metrics, "model_config": self.model_config}
        save_state(self.run_dir, tensors, info)

    def _restore(self, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        def part(prefix: str) -> dict[str, torch.Tensor]:
            head = prefix + "."
            return {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}

        self.generator.load_state_dict(part("generator"))
        self.discriminator.load_state_dict(part("discriminator"))
        if self.ema is not None:
            self.ema.load_state_dict(part("ema"))
        self.opt_g.load_state_dict(unflatten_optimizer("optim_g", tensors, info["optim_g"]))
        self.opt_d.load_state_dict(unflatten_optimizer("optim_d", tensors, info["optim_d"]))
        torch.set_rng_state(tensors["rng.torch"])
        self.sampler.set_state(tensors["rng.sampler"])
        if self.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.step = int(info["step"])
        self.metrics = dict(info.get("metrics") or {})

    def close(self) -> None:
        self.sample.close()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def train(config: TrainConfig, data: str | Path, run_dir: str | Path, *, resume: bool = False,
          progress: bool = True) -> Path:
    """Train and return the final generator checkpoint's path."""
    with Trainer(config, data, run_dir, resume=resume, progress=progress) as trainer:
        return trainer.train()
