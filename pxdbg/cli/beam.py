"""``pxdbg beam``: beam conditions of runs as conditions payloads (``BeamConditions``), and the
beam-conditions options shared by ``pxdbg generate`` and ``pxdbg dataset``.

    pxdbg beam check conditions.json
    pxdbg beam upload --db conditions.db --campaign mc16 --iov 0,1,0,100 \\
          --luminosity 1.5 --her-current 1000 --ler-current 1200 --injection-fraction 0.03
    pxdbg beam upload --db conditions.db --globaltag RunConditions --iov 0,101,0,-1 conditions.json
    pxdbg beam show --exp 0 --run 42 --campaign mc16 --source conditions.db

Exit status: 0 success, 1 refused (invalid record, frozen tag, no such run), 2 usage error.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from .checkpoint import friendly_errors, open_writable_store, parse_iov, store_options

_FIELD_OPTIONS = (("luminosity", "--luminosity", "Luminosity [1e34 cm^-2 s^-1]."),
                  ("her_current", "--her-current", "HER (e-) current [mA]."),
                  ("ler_current", "--ler-current", "LER (e+) current [mA]."),
                  ("injection_fraction", "--injection-fraction", "Fraction of frames in injection bursts [0..1]."))


def conditions_options(func: Callable) -> Callable:
    """``--conditions FILE.json`` or the four ``--luminosity ... --injection-fraction``
    options; the command receives ``conditions`` (a BeamConditions, or None when none of
    them was given)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from registry.exceptions import BeamConditionsError

        try:
            kwargs["conditions"] = conditions_from_options(kwargs.pop("conditions_file"),
                                                           {name: kwargs.pop(name) for name, _, _ in _FIELD_OPTIONS})
        except BeamConditionsError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(1)
        return func(*args, **kwargs)

    for name, flag, text in reversed(_FIELD_OPTIONS):
        wrapper = click.option(flag, name, type=float, default=None, help=text)(wrapper)
    return click.option("--conditions", "conditions_file", type=click.Path(dir_okay=False, path_type=Path),
                        default=None, metavar="FILE.json",
                        help="Beam conditions as a BeamConditions JSON record (instead of the four options).")(wrapper)


def conditions_from_options(path: Path | None, values: dict[str, float | None]):
    """A BeamConditions from a JSON file or from all four values; None when nothing was
    given; UsageError for a partial or mixed set, BeamConditionsError for invalid values."""
    from registry.beam import BeamConditions

    given = {k: v for k, v in values.items() if v is not None}
    if path is not None:
        if given:
            raise click.UsageError("give --conditions FILE or the values (--luminosity ...), not both")
        return BeamConditions.from_file(path)
    if not given:
        return None
    missing = [flag for name, flag, _ in _FIELD_OPTIONS if name not in given]
    if missing:
        raise click.UsageError(f"beam conditions need all four values; missing {', '.join(missing)} "
                               "(or give --conditions FILE.json)")
    return BeamConditions.from_mapping(given, "beam conditions options")


# -- pxdbg generate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BeamOptions:
    """What ``pxdbg generate`` was told about beam conditions."""

    conditions_file: Path | None = None
    globaltags: tuple[str, ...] = ()
    force: bool = False
    max_extrapolation: float | None = None

    @property
    def given(self) -> bool:
        return bool(self.conditions_file or self.globaltags or self.force or self.max_extrapolation is not None)

    def check(self, model: str) -> None:
        from ..models import get_model

        if self.given and not getattr(get_model(model), "CONDITIONED", False):
            raise click.UsageError(f"--beam-conditions, --beam-globaltag, --force-conditions and --max-extrapolation "
                                   f"apply to conditioned models (sparse-beam), not to {model!r}")

    def generator_kwargs(self, registry: Any) -> dict[str, Any]:
        """Arguments of :class:`pxdbg.module.PXDBackgroundGenerator`."""
        kwargs: dict[str, Any] = {"force_conditions": self.force, "max_extrapolation": self.max_extrapolation,
                                  "beam_globaltag": list(self.globaltags) or None}
        if self.conditions_file is not None:
            from registry.beam import BeamConditions

            kwargs["beam_conditions"] = BeamConditions.from_file(self.conditions_file)
        if registry is not None:
            kwargs["beam_resolver"] = registry.as_beam_resolver()
        return kwargs


def beam_generate_options(func: Callable) -> Callable:
    """The beam-conditions options of ``pxdbg generate``, passed as one ``beam`` argument."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["beam"] = BeamOptions(kwargs.pop("beam_conditions_file"), tuple(kwargs.pop("beam_globaltags")),
                                     bool(kwargs.pop("force_conditions")), kwargs.pop("max_extrapolation"))
        return func(*args, **kwargs)

    wrapper = click.option("--max-extrapolation", type=click.FloatRange(min=0), default=None,
                           help="sparse-beam: how far beyond the training conditions to go without "
                                "--force-conditions, in units of each driver's largest trained value "
                                "[the checkpoint's, 0.5].")(wrapper)
    wrapper = click.option("--force-conditions", is_flag=True, default=False,
                           help="sparse-beam: generate even for conditions further outside the training range "
                                "than allowed (the output still records the extrapolation).")(wrapper)
    wrapper = click.option("--beam-globaltag", "beam_globaltags", multiple=True, metavar="TAG",
                           help="sparse-beam: global tag(s) holding the runs' BeamConditions (default: the "
                                "checkpoints' tags).")(wrapper)
    wrapper = click.option("--beam-conditions", "beam_conditions_file",
                           type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                           metavar="FILE.json",
                           help="sparse-beam: these beam conditions for every run instead of each run's "
                                "BeamConditions payload.")(wrapper)
    return wrapper


def announce(gen: Any, exp: int, run: int, write: Callable[[str], None], last: Any) -> Any:
    """Say which beam conditions a run gets, when they changed; returns what was said."""
    fit = getattr(gen, "conditions_fit", None)
    if fit is None or fit is last:
        return last
    write(f"exp {exp} run {run}: beam conditions {gen.beam.describe()}")
    write(f"  {fit.describe()}")
    if fit.extrapolated:
        write("WARNING: these conditions lie outside the training samples': the model EXTRAPOLATES "
              "(recorded in the output's provenance)")
    return fit


# -- pxdbg beam -------------------------------------------------------------------------------


@click.group("beam")
def beam() -> None:
    """Beam conditions of runs (payload BeamConditions) for conditioned generation."""


@beam.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@friendly_errors
def check(file: Path) -> None:
    """Validate a BeamConditions JSON record and print it in canonical form."""
    from registry.beam import BeamConditions

    conditions = BeamConditions.from_file(file)
    click.echo(conditions.to_json())
    click.echo(f"valid: {conditions.summary()}", err=True)


@beam.command("upload")
@conditions_options
@click.option("--campaign", help="Campaign whose global tag gets the IoV.")
@click.option("--globaltag", help="A global tag instead of a campaign (e.g. a run-conditions tag).")
@click.option("--iov", required=True, metavar="FE,FR,LE,LR", help="Runs these conditions hold for.")
@click.option("--description", help="Free text stored in the record.")
@store_options
@friendly_errors
def upload(conditions, campaign: str | None, globaltag: str | None, iov: str, description: str | None,
           db: str | None, payload_dir: str | None, token: str | None) -> None:
    """Validate beam conditions and store them as payload BeamConditions valid for --iov.

    Give the conditions as a JSON file (--conditions) or as the four values. The same
    conditions uploaded twice are one payload (canonical JSON); an invalid record is refused
    before anything is written. (`conditionsdb upload TAG FILE --name BeamConditions` stores
    any bytes: such a record is checked only when a job resolves it.)
    """
    from registry.admin import target_tag
    from registry.beam import upload_beam_conditions

    if conditions is None:
        raise click.UsageError("give the beam conditions: --conditions FILE.json, or --luminosity, --her-current, "
                               "--ler-current and --injection-fraction")
    if description is not None:
        conditions = conditions.model_copy(update={"description": description})
        conditions = type(conditions).from_mapping(conditions.to_dict())  # validated again
    interval = parse_iov(iov)
    tag = target_tag(campaign, globaltag)
    store = open_writable_store(db, payload_dir, token)
    try:
        record = upload_beam_conditions(store, conditions, tag=tag, iov=interval)
    finally:
        close = getattr(store, "close", None)
        if callable(close):
            close()
    p = record.payload
    click.echo(f"{p.name} r{p.revision} ({conditions.summary()}) valid for {record.iov} in {tag}")


@beam.command("show")
@click.option("--exp", type=click.IntRange(min=0), required=True)
@click.option("--run", type=click.IntRange(min=0), required=True)
@click.option("--campaign", "campaigns", multiple=True, help="Campaign(s) whose tags hold the conditions.")
@click.option("--globaltag", default="PXDBackgroundGenerator", show_default=True,
              help="Global tag holding the conditions when no campaign is given.")
@click.option("--source", "sources", multiple=True, metavar="SPEC",
              help="Conditions source (repeatable; default $PXDBG_CONDITIONS).")
@click.option("--json", "as_json", is_flag=True, help="Print the record and where it came from as JSON.")
@friendly_errors
def show(exp: int, run: int, campaigns: tuple[str, ...], globaltag: str, sources: tuple[str, ...],
         as_json: bool) -> None:
    """Resolve and print the beam conditions of one run."""
    from registry.resolve import CheckpointRegistry

    try:
        with CheckpointRegistry(list(sources) or None) as registry:
            found = registry.resolve_beam_conditions(exp, run, campaign=list(campaigns) or None, globaltag=globaltag)
    except ValueError as error:  # bad environment values and the like
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(found.record(), indent=2, sort_keys=True))
    else:
        click.echo(f"exp {exp} run {run}: {found.describe()}")
