"""Screenshots of the conditions web pages for the README (docs/ui/*.png).

Builds a demo database (the three shipped checkpoints in a PUBLISHED tag, the resnet
checkpoint's held-out validation report with its plots from docs/validation/resnet_default,
and a few calibration tags in every state with run-dependent IoVs), serves it with
``python -m conditions.server`` on loopback, and photographs the main pages with the
system Chromium through Playwright.

    python scripts/ui_screenshots.py                 # writes docs/ui/*.png
    python scripts/ui_screenshots.py --keep /tmp/demo  # also keep the demo database there
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conditions.iov import IntervalOfValidity as IoV  # noqa: E402
from conditions.store import open_store  # noqa: E402
from registry.admin import attach_validation_report, publish_tag, upload_checkpoint  # noqa: E402
from registry.checkpoint import read_manifest  # noqa: E402
from tests.conditions.server.conftest import start_server  # noqa: E402

EMBEDDED = REPO / "registry" / "embedded" / "store"
PLOTS = REPO / "docs" / "validation" / "resnet_default"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CALIBRATIONS = ["BeamSpot", "CDCTimeZeros", "PXDGainMap", "PXDMaskedPixels", "SVDTimeCalibration"]


def build(store, workdir: Path) -> None:
    store.create_tag("PXDBackgroundGenerator", "the shipped demo checkpoints of the PXD background generator",
                     user="pxd-admin")
    for model in ("convnet", "resnet", "ieagan"):
        (path,) = EMBEDDED.glob(f"*/PXDBackgroundGenerator_{model}_r1.safetensors")
        upload_checkpoint(store, path, model=model, globaltag="PXDBackgroundGenerator", user="pxd-admin")
    # The resnet's held-out validation: the plots of docs/validation and the numbers its manifest records.
    (resnet,) = EMBEDDED.glob("*/PXDBackgroundGenerator_resnet_r1.safetensors")
    metrics = read_manifest(resnet).metrics
    report_dir = workdir / "resnet-report"
    report_dir.mkdir()
    for plot in PLOTS.glob("*.png"):
        shutil.copy(plot, report_dir / plot.name)
    (report_dir / "report.json").write_text(json.dumps({
        "n_generated": int(metrics["heldout_generated_events"]),
        "n_reference": int(metrics["heldout_reference_events"]),
        "scalars": {k[len("heldout_"):]: v for k, v in metrics.items()
                    if k.startswith("heldout_") and not k.endswith("_events")},
    }))
    attach_validation_report(store, report_dir, model="resnet", user="pxd-admin")
    publish_tag(store, "PXDBackgroundGenerator", user="pxd-admin")

    for name in CALIBRATIONS:
        for revision in range(1, 5):
            store.add_payload(name, f"{name} constants, revision {revision}".encode(), user="alice",
                              metadata={"author": "alice", "comment": f"calibration pass {revision}"})
    store.create_tag("main_2026a", "prompt calibration of the 2026a run period", user="alice")
    items = []
    for k, name in enumerate(CALIBRATIONS):
        step = [100, 250, 500, 1000, 200][k]
        for exp in (26, 27):
            for first in range(0, 2000, step):
                items.append((name, 1 + (first // step) % 2, IoV(exp, first, exp, first + step - 1)))
            items.append((name, 3, IoV(exp, 2000, exp, -1)))
    items.append(("BeamSpot", 3, IoV(26, 350, 26, 720)))  # a fix that overrides part of the first pass
    items.append(("PXDMaskedPixels", 4, IoV(26, 1200, 26, 1500)))
    store.add_iovs("main_2026a", items, user="alice")
    store.set_tag_state("main_2026a", "TESTING", user="alice")
    store.set_tag_state("main_2026a", "VALIDATED", user="carol")
    store.set_tag_state("main_2026a", "PUBLISHED", user="carol")
    store.clone_tag("main_2026a", "main_2026b", description="main_2026a plus the new BeamSpot", user="bob")
    store.add_iov("main_2026b", "BeamSpot", 4, IoV(26, 900, 26, 1400), user="bob")
    store.create_tag("prompt_2026c", "prompt processing of the running period", user="alice")
    store.add_iovs("prompt_2026c", [(n, 1, IoV(28, 0, 28, 99)) for n in CALIBRATIONS], user="alice")
    store.set_tag_state("prompt_2026c", "RUNNING", user="carol")
    store.create_tag("candidate_2026a_v2", "candidate for the 2026a reprocessing", user="bob")
    store.add_iovs("candidate_2026a_v2", [(n, 2, IoV(26, 0, 27, -1)) for n in CALIBRATIONS], user="bob")
    store.set_tag_state("candidate_2026a_v2", "TESTING", user="bob")
    store.create_tag("main_2025", "superseded: wrong CDC time zeros", user="alice")
    store.add_iovs("main_2025", [(n, 1, IoV(25, 0, 25, -1)) for n in CALIBRATIONS], user="alice")
    store.set_tag_state("main_2025", "TESTING", user="alice")
    store.set_tag_state("main_2025", "VALIDATED", user="carol")
    store.set_tag_state("main_2025", "PUBLISHED", user="carol")
    store.set_tag_state("main_2025", "INVALID", user="carol")


SHOTS = [
    ("tags.png", "/ui/tags", 1280, False),
    ("tag.png", "/ui/tags/main_2026b?exp=26&run=1000&per_page=12", 1280, True),
    ("payload.png", "/ui/payloads/PXDBackgroundGenerator_resnet/1", 1280, True),
    ("diff.png", "/ui/diff?tag_a=main_2026a&tag_b=main_2026b&exp=26&run=1000", 1280, True),
    ("audit.png", "/ui/audit?limit=50", 1280, False),
    ("phone-tag.png", "/ui/tags/main_2026b?exp=26&run=1000&per_page=12#timeline-heading", 390, False),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "ui")
    parser.add_argument("--keep", type=Path, help="build the demo database in this (new) directory and keep it")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="ui-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{workdir / 'conditions.db'}"
    store = open_store(url, workdir / "payloads")
    try:
        build(store, workdir)
    finally:
        store.close()
    server = start_server(url, workdir / "payloads", workdir / "server.log")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            for name, path, width, full in SHOTS:
                page = browser.new_page(viewport={"width": width, "height": 900 if width > 600 else 844})
                page.goto(server.url + path)
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(args.out / name), full_page=full)
                page.close()
                print(f"{args.out / name}: {path}")
            browser.close()
    finally:
        server.stop()
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
