#!/usr/bin/env python
"""Rebuild the embedded default store (registry/embedded/store) from checkpoints.

    # with trained checkpoints, one per model (each a safetensors file with a manifest):
    python scripts/build_embedded.py convnet=convnet.safetensors resnet=resnet.safetensors \
        ieagan=ieagan.safetensors

    # placeholders: freshly initialised weights, marked untrained in their manifests (the
    # output bias is set for ~1% pixel occupancy, see `pxdbg checkpoint init`)
    python scripts/build_embedded.py --untrained

Models not given a file are refused unless --untrained is passed, in which case they get
an untrained placeholder. Weights are stored as float16 (loaded back into float32
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

from pxdbg.cli.checkpoint import untrained_checkpoint  # noqa: E402
from pxdbg.models import available_models, get_model  # noqa: E402
from registry.build_embedded import build_embedded_store  # noqa: E402
from registry.embedded import EMBEDDED_STORE_DIR  # noqa: E402
from registry.manifest import software_versions  # noqa: E402

def untrained_placeholder(model: str, directory: Path, seed: int) -> Path:
    """A freshly initialised full-size ``model``, marked untrained in its manifest."""
    return untrained_checkpoint(model, directory / f"{model}-untrained.safetensors", seed=seed,
                                software=software_versions())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="*", metavar="MODEL=FILE", help="a checkpoint per model")
    parser.add_argument("--untrained", action="store_true",
                        help="give models without a file an untrained placeholder")
    parser.add_argument("--dtype", choices=["float16", "float32", "keep"], default="float16",
                        help="storage precision of the weights (default float16)")
    parser.add_argument("--seed", type=int, default=20261122, help="seed of the untrained placeholders")
    parser.add_argument("--output", type=Path, default=EMBEDDED_STORE_DIR, help="snapshot directory to replace")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    given: dict[str, Path] = {}
    for item in args.checkpoints:
        model, sep, file = item.partition("=")
        if not sep or model not in available_models():
            parser.error(f"expected MODEL=FILE with MODEL one of {', '.join(available_models())}; got {item!r}")
        if not Path(file).is_file():
            parser.error(f"{file}: no such file")
        given[model] = Path(file)
    missing = [m for m in available_models() if m not in given]
    if missing and not args.untrained:
        parser.error(f"no checkpoint for {', '.join(missing)} (give MODEL=FILE, or --untrained for placeholders)")

    with tempfile.TemporaryDirectory(prefix="pxdbg-untrained-") as tmp:
        for model in missing:
            given[model] = untrained_placeholder(model, Path(tmp), args.seed)
            print(f"{model}: untrained placeholder ({given[model].stat().st_size / 1e6:.1f} MB as float32)")
        versions = {m: get_model(m).ARCHITECTURE_VERSION for m in given}
        entries = build_embedded_store(given, args.output, dtype=None if args.dtype == "keep" else args.dtype,
                                       architecture_versions=versions)
    total = 0
    for entry in entries:
        total += entry.size
        print(f"{entry.model}: {entry.file.relative_to(args.output)} {entry.size / 1e6:.1f} MB md5 {entry.md5}")
    print(f"embedded store {args.output}: {total / 1e6:.1f} MB of payloads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
