"""``pxdbg generate``: write generated PXD background events to a pxd-digits file.

One run (``--exp/--run``) or a run list crossing IoV boundaries (``--runs`` or
``--runs-file``); the checkpoint is resolved per run from the registry unless
``--checkpoint`` fixes it, and is switched only when a run needs another payload.
Which sources may answer and which checkpoints may be used follows
:mod:`registry.policy` (``--failover``, ``--allow-demo``, ``--require-production``);
the output records its provenance (:mod:`pxdbg.provenance`). A conditioned model
(``--model sparse-beam``) gets each run's beam conditions (payload ``BeamConditions``, or
``--beam-conditions FILE`` for every run), and the output records them per run.

Exit status: 0 when every event was made with a checkpoint from the configured sources;
1 when the job stopped instead (a source failed, no source knew the tag, a demo
checkpoint was refused, bad input); 2 for usage errors. No output file is left behind
by a job that stopped.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from pathlib import Path
from typing import Any, Callable

import click

from .beam import BeamOptions, beam_generate_options
from .beam import announce as announce_beam

log = logging.getLogger(__name__)

_RANGE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
#: A run list longer than this is almost certainly a typo (e.g. 0:1-1000000000).
MAX_RUNS = 1_000_000


def parse_run_spec(text: str) -> list[tuple[int, int]]:
    """``"0:1-5,0:6,1:3"`` -> [(0, 1), ..., (0, 5), (0, 6), (1, 3)], in the order given.

    Each item is ``EXP:RUN`` or ``EXP:FIRST-LAST`` (inclusive). ValueError on bad syntax,
    a reversed range, or a run listed twice.
    """
    runs: list[tuple[int, int]] = []
    for item in text.split(","):
        if not item.strip():
            continue
        m = _RANGE.match(item)
        if not m:
            raise ValueError(f"bad run range {item.strip()!r}: expected EXP:RUN or EXP:FIRST-LAST")
        exp, first = int(m.group(1)), int(m.group(2))
        last = int(m.group(3)) if m.group(3) is not None else first
        if last < first:
            raise ValueError(f"bad run range {item.strip()!r}: last run before first")
        if len(runs) + last - first + 1 > MAX_RUNS:
            raise ValueError(f"run list longer than {MAX_RUNS} runs")
        runs.extend((exp, r) for r in range(first, last + 1))
    if not runs:
        raise ValueError("empty run list")
    seen = set()
    for run in runs:
        if run in seen:
            raise ValueError(f"run {run[0]}:{run[1]} listed twice")
        seen.add(run)
    return runs


def parse_runs_file(path: Path, default_events: int) -> list[tuple[int, int, int]]:
    """A run-list file: one ``RANGES [EVENTS]`` per line (``RANGES`` as for ``--runs``),
    ``#`` comments. Returns (exp, run, events) triples."""
    result: list[tuple[int, int, int]] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) > 2:
            raise ValueError(f"{path}:{lineno}: expected 'RANGES [EVENTS]', got {raw.strip()!r}")
        events = default_events
        if len(parts) == 2:
            if not parts[1].isdigit() or int(parts[1]) < 1:
                raise ValueError(f"{path}:{lineno}: events must be a positive integer, got {parts[1]!r}")
            events = int(parts[1])
        try:
            result.extend((exp, run, events) for exp, run in parse_run_spec(parts[0]))
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: {exc}") from None
    if not result:
        raise ValueError(f"{path}: no runs listed")
    keys = [(e, r) for e, r, _ in result]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: a run is listed twice")
    return result


def _source_settings(registry: Any, checkpoint: Path | None, require_production: bool | None) -> dict:
    """How checkpoints were to be found, for the provenance record."""
    from registry.policy import FAILOVER_ENV, REQUIRE_PRODUCTION_ENV, env_flag
    from registry.resolve import configured_specs, public_location

    if checkpoint is not None:
        sources, failover = ["file"], False
    elif registry is not None:
        sources, failover = registry.source_descriptions, registry.failover
    else:
        sources, failover = [public_location(s) for s in configured_specs()] or ["embedded"], env_flag(FAILOVER_ENV)
    required = require_production if require_production is not None else env_flag(REQUIRE_PRODUCTION_ENV)
    return {"sources": sources, "failover": failover, "require_production": required}


def _checkpoint_line(record: dict) -> str:
    if record.get("payload"):
        return (f"{record['payload']} r{record['revision']} md5 {record['md5']} (tag {record['globaltag']}) "
                f"from {record['source']}")
    return f"file {record['file']} sha256 {record['sha256']}"


def handle_errors(func: Callable) -> Callable:
    """Bad input and refused checkpoints become ``error: ...`` and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from conditions.exceptions import ConditionsError
        from registry.exceptions import RegistryError

        from ..digits import DigitsFormatError

        try:
            return func(*args, **kwargs)
        except (ConditionsError, RegistryError, DigitsFormatError, ValueError, TypeError) as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(1)
        except OSError as error:  # unwritable output, full disk: say which file, no traceback
            where = f" ({error.filename})" if error.filename else ""
            click.echo(f"error: {error.strerror or error}{where}; check the path, its permissions and free space",
                       err=True)
            sys.exit(1)

    return wrapper


@click.command()
@click.option("-n", "--events", type=click.IntRange(min=1), default=10, show_default=True,
              help="Events to generate (per run with --runs/--runs-file).")
@click.option("--exp", type=click.IntRange(min=0), default=0, show_default=True, help="Experiment number.")
@click.option("--run", type=click.IntRange(min=0), default=0, show_default=True, help="Run number.")
@click.option("--runs", "runs_spec", metavar="RANGES",
              help="Run list instead of --exp/--run, e.g. '0:1-5,0:6,1:2-3'; may cross IoV boundaries.")
@click.option("--runs-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Run list file: one 'RANGES [EVENTS]' per line, # comments.")
@click.option("--model", default=None,
              help="Generator model: sparse (digits directly, milliseconds per event), sparse-beam (the same, "
                   "made for each run's beam conditions), or a GAN: convnet, resnet, ieagan (seconds per event on "
                   "a CPU). Default: the --checkpoint's model, else sparse.")
@click.option("--campaign", "campaigns", multiple=True,
              help="Background campaign (its global tag provides the checkpoints); repeat for a run list "
                   "spanning several, highest priority first.")
@click.option("--globaltag", default="PXDBackgroundGenerator", show_default=True,
              help="Global tag providing the checkpoints when no campaign is given.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Use this checkpoint file for every run instead of resolving one.")
@click.option("--source", "sources", multiple=True, metavar="SPEC",
              help="Conditions source to resolve checkpoints from (repeatable, tried in order): store path, "
                   "sqlite:///, postgresql://, http://server or a snapshot directory. Default: $PXDBG_CONDITIONS; "
                   "with neither, the embedded demo store.")
@click.option("--failover", is_flag=True, default=None,
              help="A configured source that fails (unreachable, damaged bytes, I/O error) is skipped for the "
                   "next one instead of stopping the job (env PXDBG_FAILOVER=1).")
@click.option("--allow-demo", is_flag=True, default=None,
              help="Ask the embedded demo store last even though sources are configured (env PXDBG_ALLOW_DEMO=1).")
@click.option("--require-production", is_flag=True, default=None,
              help="Refuse demo and untrained checkpoints (env PXDBG_REQUIRE_PRODUCTION=1, for grid jobs).")
@click.option("--seed", type=int, help="Seed; default: a random one, recorded in the output file.")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cpu or cuda:0.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Intra-op CPU threads.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Events generated together [sparse: 64; GANs: 1 per forward pass].")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when on a terminal).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("pxd_background.h5"), show_default=True, help="Output pxd-digits file.")
@beam_generate_options
@handle_errors
def generate(events: int, exp: int, run: int, runs_spec: str | None, runs_file: Path | None, model: str | None,
             campaigns: tuple[str, ...], globaltag: str, checkpoint: Path | None, sources: tuple[str, ...],
             failover: bool | None, allow_demo: bool | None, require_production: bool | None,
             seed: int | None, device: str,
             threads: int, batch: int | None, progress: bool | None, output: Path, beam: BeamOptions) -> None:
    """Generate PXD background events and write them as a pxd-digits file."""
    import secrets

    from tqdm import tqdm

    from .. import provenance
    from ..digits import DigitsWriter
    from ..models import DEFAULT_MODEL, SPARSE, model_kind
    from ..module import PXDBackgroundGenerator, model_of_checkpoint

    if runs_spec and runs_file:
        raise click.UsageError("give --runs or --runs-file, not both")
    if model is None:
        model = model_of_checkpoint(checkpoint) if checkpoint is not None else DEFAULT_MODEL
    try:
        kind = model_kind(model)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--model") from None
    beam.check(model)
    if batch is None:
        batch = 64 if kind == SPARSE else 1
    if not output.resolve().parent.is_dir():  # before minutes of generation, not after
        raise click.BadParameter(f"directory {str(output.resolve().parent)!r} does not exist", param_hint="-o/--output")
    if runs_file:
        plan = parse_runs_file(runs_file, events)
    elif runs_spec:
        plan = [(e, r, events) for e, r in parse_run_spec(runs_spec)]
    else:
        plan = [(exp, run, events)]
    if seed is None:
        seed = secrets.randbelow(2**64) - 2**63
        log.info("random seed %d", seed)
    registry = None
    if checkpoint is not None:
        if sources or failover or allow_demo:
            raise click.UsageError("give --checkpoint or conditions sources (--source, --failover, --allow-demo), "
                                   "not both")
    elif sources or failover or allow_demo or require_production:
        from registry.resolve import CheckpointRegistry

        # Sources given here replace $PXDBG_CONDITIONS. (Without options, the module's
        # default resolver applies the same rules from the environment.)
        registry = CheckpointRegistry(list(sources) or None, allow_demo=allow_demo, failover=failover,
                                      require_production=require_production)
    gen = PXDBackgroundGenerator(model=model, checkpoint=checkpoint, seed=seed, nintra=threads,
                                 globaltag=globaltag, campaign=list(campaigns) or None, device=device,
                                 resolver=registry.as_resolver() if registry is not None else None,
                                 require_production=require_production, **beam.generator_kwargs(registry))
    gen.initialize()
    total = sum(n for _, _, n in plan)
    attrs = {"generator_model": model, "generator_seed": seed,
             "generator_campaign": ",".join(campaigns), "generator_globaltag": globaltag}
    recorder = provenance.ProvenanceRecorder(
        model=model, seed=seed, globaltag=None if campaigns else globaltag, campaigns=campaigns,
        settings=_source_settings(registry, checkpoint, require_production))
    bar = tqdm(total=total, unit="evt", disable=(not progress) if progress is not None else None,
               file=sys.stderr, desc=f"pxdbg generate {model}")
    with DigitsWriter(output, attrs=attrs) as writer:
        announced = told = None
        for e, r, n in plan:
            gen.begin_run(e, r)
            if gen.resolved is not announced:  # say where the weights came from at every switch
                announced = gen.resolved
                bar.write(f"exp {e} run {r}: checkpoint {gen.checkpoint_description}", file=sys.stderr)
                if gen.demo:
                    bar.write("WARNING: this is a DEMO checkpoint, not a physics model: its events are not "
                              "physics background (--require-production refuses it)", file=sys.stderr)
            told = announce_beam(gen, e, r, lambda text: bar.write(text, file=sys.stderr), told)
            recorder.add_run(e, r, n, gen)
            done = 0
            while done < n:
                k = min(batch, n - done)
                digits = gen.events(k)
                # basf2 numbers events from 1 within a run
                writer.append_many(digits, exp=[e] * k, run=[r] * k, evt=range(done + 1, done + k + 1))
                done += k
                bar.update(k)
        document = recorder.document()
        provenance.write(writer, document)
        # One line per checkpoint for a quick look (`h5dump -A`); the full record is the
        # provenance document. Never a local cache path.
        writer.set_attrs(generator_checkpoints="\n".join(_checkpoint_line(c) for c in document["checkpoints"]),
                         generator_loads=gen.stats.loads,
                         generator_demo=any(c["demo"] for c in document["checkpoints"]))
    bar.close()
    gen.terminate()
    if registry is not None:
        registry.close()
    s = gen.stats
    click.echo(f"wrote {s.events} events ({len(plan)} run(s), {s.digits / max(s.events, 1):.0f} digits/event, "
               f"{s.loads} checkpoint load(s)) to {output}", err=True)
