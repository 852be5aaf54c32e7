"""``pxdbg checkpoint``: upload checkpoints into campaign tags, import legacy basf2 files,
show a checkpoint's manifest, and resolve which checkpoint a run gets."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

#: Where ``--db`` is read from when not given (the conditionsdb variable works too).
DB_ENVVARS = ["PXDBG_DB", "CONDITIONSDB_URL"]


def open_writable_store(db: str | None, payload_dir: str | None = None, token: str | None = None):
    """The store an admin command writes to: an SQL store (path, sqlite:///, postgresql://)
    or a conditions server (http(s)://, with a token)."""
    if not db:
        raise click.UsageError(f"no store given: pass --db URL or set {' or '.join(DB_ENVVARS)}")
    if db.startswith(("http://", "https://")):
        from conditions.client import ConditionsClient

        return ConditionsClient(db, token=token)
    from conditions.store import open_store

    return open_store(db, payload_dir)


def store_options(func: Callable) -> Callable:
    """``--db``, ``--payload-dir`` and ``--token`` for commands that open a store."""
    func = click.option("--token", envvar="CONDITIONSDB_TOKEN", metavar="SECRET",
                        help="API token when --db is a server (env CONDITIONSDB_TOKEN).")(func)
    func = click.option("--payload-dir", envvar="CONDITIONSDB_PAYLOAD_DIR", metavar="DIR",
                        help="Payload directory of an SQL store (default: derived from --db).")(func)
    func = click.option("--db", envvar=DB_ENVVARS, metavar="URL",
                        help="Store: path, sqlite:///PATH, postgresql://... or http://server "
                             "(env PXDBG_DB or CONDITIONSDB_URL).")(func)
    return func


def friendly_errors(func: Callable) -> Callable:
    """Report conditions and registry errors as ``error: ...`` with exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from conditions.exceptions import ConditionsError
        from registry.exceptions import RegistryError

        try:
            return func(*args, **kwargs)
        except (ConditionsError, RegistryError) as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(1)

    return wrapper


def parse_iov(text: str):
    from conditions.iov import IntervalOfValidity

    try:
        return IntervalOfValidity.parse(text)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--iov") from None


def _model_choice() -> click.Choice:
    from pxdbg.models import available_models

    return click.Choice(list(available_models()))


def _dense_model_choice() -> click.Choice:
    """The GANs: models with weights (the sparse model is fitted to data: pxdbg train)."""
    from pxdbg.models import dense_models

    return click.Choice(list(dense_models()))


@click.group()
def checkpoint() -> None:
    """Generator checkpoints as conditions payloads."""


@checkpoint.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", required=True, type=_model_choice(), help="The model the weights belong to.")
@click.option("--campaign", help="Campaign whose global tag gets the IoV.")
@click.option("--globaltag", help="A global tag instead of a campaign (default PXDBackgroundGenerator).")
@click.option("--iov", default="0,0,-1,-1", show_default=True, metavar="FE,FR,LE,LR",
              help="Interval of validity: first exp, first run, final exp, final run.")
@click.option("--training-dataset", help="Recorded in the manifest if the file has none.")
@click.option("--training-steps", type=int, help="Recorded in the manifest if the file has none.")
@click.option("--description", help="Recorded in the manifest if the file has none.")
@click.option("--format", "checkpoint_format", type=click.Choice(["safetensors", "basf2"]), default="safetensors",
              show_default=True,
              help="safetensors: pxdbg's format, manifest inside. basf2: the plain torch state dict that "
                   "basf2's own PXDBackgroundGenerator module torch.loads, for tags basf2 jobs read; the "
                   "manifest goes into the payload metadata, where pxdbg reads it back.")
@store_options
@friendly_errors
def upload(file: Path, model: str, campaign: str | None, globaltag: str | None, iov: str,
           training_dataset: str | None, training_steps: int | None, description: str | None,
           checkpoint_format: str, db: str | None, payload_dir: str | None, token: str | None) -> None:
    """Upload FILE and create its IoV in the campaign's tag.

    FILE is a safetensors checkpoint (with --format basf2 also a legacy torch state dict).
    A file without a manifest gets one (model, architecture version, campaign and the
    options above); the uploaded copy carries it (or, for basf2, its payload metadata),
    FILE itself is not changed. With --format basf2 (the GANs: basf2 has no sparse model)
    the weights must fit the default architecture, the only one basf2's module builds.
    """
    from pxdbg.models import SPARSE, get_model, model_kind
    from pxdbg.models.loading import basf2_state_dict
    from registry.admin import upload_checkpoint

    if checkpoint_format == "basf2" and model_kind(model) == SPARSE:
        raise click.BadParameter("basf2's module runs the GANs only; upload a sparse checkpoint as safetensors",
                                 param_hint="--format")
    interval = parse_iov(iov)
    fields = {k: v for k, v in (("training_dataset", training_dataset), ("training_steps", training_steps),
                                ("description", description)) if v is not None}
    store = open_writable_store(db, payload_dir, token)
    try:
        result = upload_checkpoint(store, file, model=model, campaign=campaign, globaltag=globaltag,
                                   iov=interval, architecture_version=get_model(model).ARCHITECTURE_VERSION,
                                   manifest_fields=fields, checkpoint_format=checkpoint_format,
                                   to_basf2=functools.partial(basf2_state_dict, model))
    finally:
        store.close()
    note = " (manifest added)" if result.manifest_added else ""
    kind = " as a basf2 torch state dict (manifest in the payload metadata)" if checkpoint_format == "basf2" else ""
    click.echo(f"uploaded {result.payload.name} revision {result.payload.revision}{kind}{note} "
               f"md5 {result.payload.checksum}; IoV {interval} in global tag {result.tag}")


@checkpoint.command("attach-report")
@click.argument("report_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", required=True, type=_model_choice(), help="The model of the validated checkpoint.")
@click.option("--revision", type=click.IntRange(min=1), help="Its payload revision (default: the newest).")
@store_options
@friendly_errors
def attach_report(report_dir: Path, model: str, revision: int | None, db: str | None, payload_dir: str | None,
                  token: str | None) -> None:
    """Store REPORT_DIR (from `pxdbg validate -o REPORT_DIR`) as the validation report of a
    checkpoint payload; `conditionsdb serve` shows it, plots included, on the payload's page."""
    from registry.admin import attach_validation_report

    store = open_writable_store(db, payload_dir, token)
    try:
        report = attach_validation_report(store, report_dir, model=model, revision=revision)
    finally:
        store.close()
    target = report.metadata["validates"]
    click.echo(f"stored {report.name} revision {report.revision} ({report.size} bytes): the validation report "
               f"of {target['name']} revision {target['revision']}")


@checkpoint.command("import-legacy")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", required=True, type=_dense_model_choice(), help="The model the state dict belongs to.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The safetensors checkpoint to write.")
@click.option("--campaign", help="Campaign the weights were trained for.")
@click.option("--training-dataset", help="Reference to the training sample.")
@click.option("--training-steps", type=int)
@click.option("--description", default="imported from a legacy torch state dict", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="Storage precision of the floating-point weights.")
@friendly_errors
def import_legacy_command(file: Path, model: str, output: Path, campaign: str | None,
                          training_dataset: str | None, training_steps: int | None, description: str,
                          dtype: str) -> None:
    """Convert a legacy torch state dict (as basf2 ships) to a safetensors checkpoint.

    The file is read with torch.load(weights_only=True): pickled code is refused, never
    run. The weights must load into the model (strict) before anything is written.
    """
    from pxdbg.models import get_model
    from pxdbg.models.loading import adapt_legacy_state_dict, build_from_state_dict
    from registry.admin import cast_checkpoint, import_legacy
    from registry.manifest import Manifest, software_versions

    manifest = Manifest(model=model, architecture_version=get_model(model).ARCHITECTURE_VERSION,
                        campaign=campaign, training_dataset=training_dataset,
                        training_steps=training_steps, description=description,
                        software=software_versions())

    def convert(state_dict: dict) -> dict:
        # The models' documented legacy key mapping, then a strict load: what is stored
        # is exactly what the model loads, so no adaptation is needed at generation time.
        adapted = adapt_legacy_state_dict(state_dict)
        build_from_state_dict(model, adapted)
        return adapted

    import_legacy(file, output, manifest, convert=convert)
    if dtype != "float32":
        cast_checkpoint(output, output, dtype)
    click.echo(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB, model {model}, "
               f"architecture version {manifest.architecture_version})")


@checkpoint.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@friendly_errors
def show(file: Path, as_json: bool) -> None:
    """Print the manifest and tensor summary of a checkpoint file."""
    from safetensors import safe_open

    from registry.checkpoint import SAFETENSORS, read_manifest, sniff_format

    fmt = sniff_format(file)
    manifest = read_manifest(file)
    summary: dict[str, Any] = {"file": str(file), "format": fmt, "size_bytes": file.stat().st_size,
                               "manifest": manifest.to_dict() if manifest else None}
    if fmt == SAFETENSORS:
        dtypes: dict[str, int] = {}
        with safe_open(str(file), framework="pt") as f:
            keys = list(f.keys())
            for key in keys:
                dtype = str(f.get_slice(key).get_dtype())
                dtypes[dtype] = dtypes.get(dtype, 0) + 1
        summary.update(tensors=len(keys), dtypes=dtypes)
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    click.echo(f"{file}: {fmt}, {summary['size_bytes'] / 1e6:.2f} MB")
    if "tensors" in summary:
        click.echo(f"  tensors: {summary['tensors']} ({', '.join(f'{n} {d}' for d, n in summary['dtypes'].items())})")
    if manifest is None:
        click.echo("  no manifest" + (" (legacy torch file: use `pxdbg checkpoint import-legacy`)"
                                      if fmt != SAFETENSORS else ""))
        return
    for key, value in manifest.to_dict().items():
        if value not in (None, {}, ""):
            click.echo(f"  {key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")


@checkpoint.command()
@click.option("--model", required=True, type=_model_choice())
@click.option("--exp", required=True, type=click.IntRange(min=0))
@click.option("--run", required=True, type=click.IntRange(min=0))
@click.option("--campaign", multiple=True, help="Campaign(s), highest priority first.")
@click.option("--globaltag", multiple=True, help="Global tag(s) when no campaign is given.")
@click.option("--source", "sources", multiple=True, metavar="SPEC",
              help="Conditions source(s), tried in order (default: $PXDBG_CONDITIONS; with neither, the "
                   "embedded demo store).")
@click.option("--no-embedded", is_flag=True, help="Never use the embedded demo store.")
@click.option("--allow-demo", is_flag=True, default=None,
              help="Ask the embedded demo store last even though sources are configured (env PXDBG_ALLOW_DEMO=1).")
@click.option("--failover", is_flag=True, default=None,
              help="Skip a configured source that fails instead of stopping (env PXDBG_FAILOVER=1).")
@click.option("--require-production", is_flag=True, default=None,
              help="Refuse demo and untrained checkpoints (env PXDBG_REQUIRE_PRODUCTION=1).")
@click.option("--allow-open", is_flag=True, help="Accept OPEN global tags.")
@friendly_errors
def resolve(model: str, exp: int, run: int, campaign: tuple[str, ...], globaltag: tuple[str, ...],
            sources: tuple[str, ...], no_embedded: bool, allow_demo: bool | None, failover: bool | None,
            require_production: bool | None, allow_open: bool) -> None:
    """Which checkpoint (exp, run) gets, where it came from, and the verified local file."""
    from pxdbg.models import get_model
    from registry.resolve import CheckpointRegistry

    registry = CheckpointRegistry(list(sources) or None, use_embedded=False if no_embedded else None,
                                  allow_open=allow_open, allow_demo=allow_demo, failover=failover,
                                  require_production=require_production)
    with registry:
        found = registry.resolve(model, exp, run, campaign=list(campaign) or None,
                                 globaltag=list(globaltag) or "PXDBackgroundGenerator",
                                 architecture_version=get_model(model).ARCHITECTURE_VERSION)
    click.echo(found.describe())
    click.echo(f"  file: {found.path}")
    click.echo(f"  valid for: {found.valid}")
    note = found.manifest.description
    click.echo(f"  manifest: model {found.manifest.model} v{found.manifest.architecture_version}, "
               f"campaign {found.manifest.campaign}, training steps {found.manifest.training_steps}"
               + (f" ({note})" if note else ""))


@checkpoint.command()
@click.option("--model", required=True, type=_dense_model_choice())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--occupancy", type=click.FloatRange(0.0001, 0.5), default=0.01, show_default=True,
              help="Fraction of pixels the placeholder fires.")
@click.option("--config", "config", multiple=True, metavar="KEY=VALUE",
              help="Model constructor argument, e.g. width=0.0625 (convnet, resnet) or ch=4 (ieagan).")
@click.option("--campaign", help="Campaign recorded in the manifest.")
@friendly_errors
def init(model: str, output: Path, seed: int, occupancy: float, config: tuple[str, ...], campaign: str | None) -> None:
    """Write an UNTRAINED placeholder checkpoint (fresh weights, marked so in the manifest)."""
    import torch

    torch.set_num_threads(1)
    settings = {}
    for item in config:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--config")
        settings[key.strip()] = json.loads(value) if value.strip()[:1].isdigit() or value.strip()[:1] in "-[{" else value
    from ..placeholders import untrained_checkpoint

    try:
        untrained_checkpoint(model, output, seed=seed, occupancy=occupancy, config=settings, campaign=campaign)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--config") from None
    click.echo(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB): untrained {model}")
