#!/usr/bin/env python
"""Rebuild the embedded default store (registry/embedded/store) from checkpoints.

    # with trained checkpoints, one per model (each a safetensors file with a manifest):
    python scripts/build_embedded.py convnet=convnet.safetensors resnet=resnet.safetensors \
        ieagan=ieagan.safetensors

    # placeholders: freshly initialised weights, marked untrained in their manifests (the
    # output bias is set for ~1% pixel occupancy, see `pxdbg checkpoint init`)
    python scripts/build_embedded.py --untrained

    # add or replace one model, keeping the others as they are in the current store:
    python scripts/build_embedded.py sparse=runs/sparse/sparse.safetensors --keep-embedded

    # with the held-out validation of each checkpoint (``pxdbg validate``'s report.json)
    # recorded in its manifest as ``heldout_*`` metrics:
    python scripts/build_embedded.py convnet=convnet.safetensors --validation convnet=val/convnet/report.json ...

Models not given a file are refused unless --keep-embedded (the current embedded store's
checkpoint) or --untrained (an untrained placeholder; the GANs only: the sparse model is
fitted to data) is passed. GAN weights are stored as float16 (loaded back into float32
models) unless --dtype float32. The manifests must match the architecture versions of the
installed model code. Prints each payload's size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pxdbg.placeholders import untrained_checkpoint  # noqa: E402
from pxdbg.models import embedded_models, get_model, model_kind  # noqa: E402
from registry.build_embedded import build_embedded_store  # noqa: E402
from registry.embedded import EMBEDDED_STORE_DIR  # noqa: E402
from registry.manifest import software_versions  # noqa: E402

def untrained_placeholder(model: str, directory: Path, seed: int) -> Path:
    """A freshly initialised full-size ``model``, marked untrained in its manifest."""
    return untrained_checkpoint(model, directory / f"{model}-untrained.safetensors", seed=seed,
                                software=software_versions())


def embedded_checkpoints(models: list[str], directory: Path) -> dict[str, Path]:
    """Copies of the current embedded store's checkpoints of ``models`` (those it holds)."""
    import shutil

    from registry.embedded import EMBEDDED_GLOBALTAG, open_embedded

    found: dict[str, Path] = {}
    with open_embedded() as store:
        for record in store.iovs(EMBEDDED_GLOBALTAG):
            model = record.payload.name.removeprefix("PXDBackgroundGenerator_")
            if model in models:
                found[model] = Path(shutil.copy(store.local_path(record.payload), directory / f"{model}-kept.bin"))
    return found


def with_validation(checkpoint: Path, report_file: Path, directory: Path) -> Path:
    """A copy of ``checkpoint`` whose manifest metrics also hold the headline numbers of a
    ``pxdbg validate`` report (prefixed ``heldout_``, with the event counts), so that the
    shipped file says how it was validated, not only how it was trained."""
    import json
    from dataclasses import replace

    from registry.checkpoint import read_checkpoint, write_checkpoint

    report = json.loads(report_file.read_text())
    try:
        scalars = report["scalars"]
        counts = {"heldout_generated_events": report["n_generated"], "heldout_reference_events": report["n_reference"]}
    except (KeyError, TypeError):
        raise ValueError(f"{report_file}: not a pxdbg validate report.json") from None
    tensors, manifest = read_checkpoint(checkpoint)
    if manifest is None:
        raise ValueError(f"{checkpoint}: checkpoint carries no manifest")
    metrics = dict(manifest.metrics)
    metrics.update({f"heldout_{k}": float(v) for k, v in scalars.items() if v is not None})
    metrics.update({k: float(v) for k, v in counts.items()})
    out = directory / f"{manifest.model}-validated.safetensors"
    write_checkpoint(out, tensors, replace(manifest, metrics=metrics))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="*", metavar="MODEL=FILE", help="a checkpoint per model")
    parser.add_argument("--validation", action="append", default=[], metavar="MODEL=REPORT",
                        help="a pxdbg validate report.json whose scalars go into MODEL's manifest (repeatable)")
    parser.add_argument("--untrained", action="store_true",
                        help="give models without a file an untrained placeholder")
    parser.add_argument("--keep-embedded", action="store_true",
                        help="give models without a file the current embedded store's checkpoint")
    parser.add_argument("--dtype", choices=["float16", "float32", "keep"], default="float16",
                        help="storage precision of the weights (default float16)")
    parser.add_argument("--seed", type=int, default=20261122, help="seed of the untrained placeholders")
    parser.add_argument("--output", type=Path, default=EMBEDDED_STORE_DIR, help="snapshot directory to replace")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    given: dict[str, Path] = {}
    for item in args.checkpoints:
        model, sep, file = item.partition("=")
        if not sep or model not in embedded_models():
            parser.error(f"expected MODEL=FILE with MODEL one of {', '.join(embedded_models())}; got {item!r}")
        if not Path(file).is_file():
            parser.error(f"{file}: no such file")
        given[model] = Path(file)
    missing = [m for m in embedded_models() if m not in given]
    if missing and not (args.untrained or args.keep_embedded):
        parser.error(f"no checkpoint for {', '.join(missing)} (give MODEL=FILE, --keep-embedded or --untrained)")
    if args.untrained and not args.keep_embedded and "sparse" in missing:
        parser.error("the sparse model has no untrained placeholder: give sparse=FILE (pxdbg train --model sparse)")

    reports: dict[str, Path] = {}
    for item in args.validation:
        model, sep, file = item.partition("=")
        if not sep or model not in given:
            parser.error(f"--validation expects MODEL=REPORT for a MODEL given a checkpoint; got {item!r}")
        if not Path(file).is_file():
            parser.error(f"{file}: no such file")
        reports[model] = Path(file)

    with tempfile.TemporaryDirectory(prefix="pxdbg-untrained-") as tmp:
        for model, report in reports.items():
            given[model] = with_validation(given[model], report, Path(tmp))
            print(f"{model}: held-out validation from {report} recorded in the manifest")
        kept: dict[str, Path] = {}
        if args.keep_embedded and missing:
            kept = embedded_checkpoints(missing, Path(tmp))
            given.update(kept)
            for model in kept:
                print(f"{model}: kept from the current embedded store")
            missing = [m for m in missing if m not in kept]
        for model in missing:
            given[model] = untrained_placeholder(model, Path(tmp), args.seed)
            print(f"{model}: untrained placeholder ({given[model].stat().st_size / 1e6:.1f} MB as float32)")
        versions = {m: get_model(m).ARCHITECTURE_VERSION for m in given}
        storage = None if args.dtype == "keep" else args.dtype
        # The sparse model's tables are integers that must stay exact: never cast; kept
        # checkpoints stay byte for byte what they were (same payload checksum).
        dtypes = {m: (None if model_kind(m) == "sparse" or m in kept else storage) for m in given}
        entries = build_embedded_store(given, args.output, dtype=dtypes, architecture_versions=versions)
    total = 0
    for entry in entries:
        total += entry.size
        print(f"{entry.model}: {entry.file.relative_to(args.output)} {entry.size / 1e6:.1f} MB md5 {entry.md5}")
    print(f"embedded store {args.output}: {total / 1e6:.1f} MB of payloads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
