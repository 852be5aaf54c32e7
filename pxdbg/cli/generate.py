"""``pxdbg generate``: write generated PXD background events to a pxd-digits file.

One run (``--exp/--run``) or a run list crossing IoV boundaries (``--runs`` or
``--runs-file``); the checkpoint is resolved per run from the registry unless
``--checkpoint`` fixes it, and is switched only when a run needs another payload.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from pathlib import Path
from typing import Any, Callable

import click

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
              help="Generator model: sparse (digits directly, milliseconds per event), or a GAN: convnet, "
                   "resnet, ieagan (seconds per event on a CPU). Default: the --checkpoint's model, else sparse.")
@click.option("--campaign", "campaigns", multiple=True,
              help="Background campaign (its global tag provides the checkpoints); repeat for a run list "
                   "spanning several, highest priority first.")
@click.option("--globaltag", default="PXDBackgroundGenerator", show_default=True,
              help="Global tag providing the checkpoints when no campaign is given.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Use this checkpoint file for every run instead of resolving one.")
@click.option("--source", "sources", multiple=True, metavar="SPEC",
              help="Conditions source to resolve checkpoints from (repeatable, tried in order, before the "
                   "embedded store): store path, sqlite:///, postgresql://, http://server or a snapshot "
                   "directory. Default: $PXDBG_CONDITIONS.")
@click.option("--seed", type=int, help="Seed; default: a random one, recorded in the output file.")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cpu or cuda:0.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Intra-op CPU threads.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Events generated together [sparse: 64; GANs: 1 per forward pass].")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when on a terminal).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("pxd_background.h5"), show_default=True, help="Output pxd-digits file.")
@handle_errors
def generate(events: int, exp: int, run: int, runs_spec: str | None, runs_file: Path | None, model: str | None,
             campaigns: tuple[str, ...], globaltag: str, checkpoint: Path | None, sources: tuple[str, ...],
             seed: int | None, device: str,
             threads: int, batch: int | None, progress: bool | None, output: Path) -> None:
    """Generate PXD background events and write them as a pxd-digits file."""
    import secrets

    from tqdm import tqdm

    from ..digits import DigitsWriter
    from ..module import PXDBackgroundGenerator

    from ..models import DEFAULT_MODEL, SPARSE, model_kind
    from ..module import model_of_checkpoint

    if runs_spec and runs_file:
        raise click.UsageError("give --runs or --runs-file, not both")
    if model is None:
        model = model_of_checkpoint(checkpoint) if checkpoint is not None else DEFAULT_MODEL
    try:
        kind = model_kind(model)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--model") from None
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
    if sources:
        if checkpoint is not None:
            raise click.UsageError("give --checkpoint or --source, not both")
        from registry.resolve import CheckpointRegistry

        # Sources given here replace $PXDBG_CONDITIONS; the embedded store stays last.
        registry = CheckpointRegistry(list(sources))
    gen = PXDBackgroundGenerator(model=model, checkpoint=checkpoint, seed=seed, nintra=threads,
                                 globaltag=globaltag, campaign=list(campaigns) or None, device=device,
                                 resolver=registry.as_resolver() if registry is not None else None)
    gen.initialize()
    total = sum(n for _, _, n in plan)
    attrs = {"generator_model": model, "generator_seed": seed,
             "generator_campaign": ",".join(campaigns), "generator_globaltag": globaltag}
    bar = tqdm(total=total, unit="evt", disable=(not progress) if progress is not None else None,
               file=sys.stderr, desc=f"pxdbg generate {model}")
    with DigitsWriter(output, attrs=attrs) as writer:
        for e, r, n in plan:
            loads = gen.stats.loads
            gen.begin_run(e, r)
            if gen.stats.loads != loads:  # say where the weights came from at every switch
                bar.write(f"exp {e} run {r}: checkpoint {gen.checkpoint_description}", file=sys.stderr)
            done = 0
            while done < n:
                k = min(batch, n - done)
                digits = gen.events(k)
                # basf2 numbers events from 1 within a run
                writer.append_many(digits, exp=[e] * k, run=[r] * k, evt=range(done + 1, done + k + 1))
                done += k
                bar.update(k)
        writer.set_attrs(generator_checkpoints="\n".join(gen.stats.checkpoints), generator_loads=gen.stats.loads)
    bar.close()
    gen.terminate()
    if registry is not None:
        registry.close()
    s = gen.stats
    click.echo(f"wrote {s.events} events ({len(plan)} run(s), {s.digits / max(s.events, 1):.0f} digits/event, "
               f"{s.loads} checkpoint load(s)) to {output}", err=True)
