"""Generated files say exactly which checkpoint made each run, and where it came from
(issue 11, item 2): a file made through a server is traced back to the exact payload."""

from __future__ import annotations

import hashlib
import json

import requests
import torch
from click.testing import CliRunner

from conditions.iov import IntervalOfValidity as IoV
from conditions.store import open_store
from pxdbg import provenance
from pxdbg.cli import main
from pxdbg.digits import DigitsReader
from pxdbg.models.loading import save_generator
from registry.admin import publish_tag, upload_checkpoint
from registry.campaigns import Campaign, campaign_tag, create_campaign
from tests.pxdbg.tiny_models import tiny_convnet

from .conftest import LiveServer

torch.set_num_threads(1)


def test_a_file_made_through_a_server_is_traced_to_the_exact_payload(tmp_path, monkeypatch):
    db = tmp_path / "campaigns.db"
    with open_store(db) as store:
        create_campaign(store, Campaign(name="mc"))
        for seed, iov in ((1, IoV(2, 0, 2, 9)), (2, IoV(2, 10, 2, -1))):
            file = save_generator(tmp_path / f"c{seed}.safetensors", "convnet", tiny_convnet(seed),
                                  campaign="mc", training_steps=1000 * seed)
            upload_checkpoint(store, file, model="convnet", campaign="mc", iov=iov)
        publish_tag(store, campaign_tag("mc"))
    server = LiveServer(db, tmp_path / "server.log")
    cache = tmp_path / "job-cache"
    try:
        host_port = server.url.split("//", 1)[1]
        # Credentials in the configured URL never reach the file.
        monkeypatch.setenv("PXDBG_CONDITIONS", f"http://someone:s3cret@{host_port}")
        monkeypatch.setenv("CONDITIONS_CACHE_DIR", str(cache))
        out = tmp_path / "bg.h5"
        result = CliRunner().invoke(main, ["generate", "--model", "convnet", "--campaign", "mc", "--runs", "2:9-10",
                                           "--events", "2", "--seed", "7", "--no-progress", "-o", str(out)])
        assert result.exit_code == 0, result.output
        with DigitsReader(out) as reader:
            record = provenance.read(reader)
            attrs = {k: str(v) for k, v in reader.attrs.items()}
            document = reader.document("provenance")
        assert record["seed"] == 7 and record["model"] == "convnet" and record["campaigns"] == ["mc"]
        assert record["pxdbg_version"] and record["created"].endswith("+00:00")
        assert [(r["exp"], r["run"], r["events"], r["checkpoint"]) for r in record["runs"]] == [(2, 9, 2, 0),
                                                                                                (2, 10, 2, 1)]
        for index, c in enumerate(record["checkpoints"]):
            assert c["source"] == server.url and c["globaltag"] == campaign_tag("mc") and c["campaign"] == "mc"
            assert c["iov"] == [[2, 0, 2, 9], [2, 10, 2, -1]][index]
            assert c["model"] == "convnet" and c["architecture_version"] == 1 and not c["demo"]
            assert c["training_steps"] == 1000 * (index + 1) and len(c["manifest_id"]) == 64
            # Back to the server: the payload named there has exactly these bytes.
            meta = requests.get(f"{server.url}/api/v1/payloads/{c['payload']}/{c['revision']}", timeout=10).json()
            assert (meta["sha256"], meta["checksum"]) == (c["sha256"], c["md5"])
            data = requests.get(f"{server.url}/api/v1/payloads/{c['payload']}/{c['revision']}/data", timeout=10)
            assert hashlib.sha256(data.content).hexdigest() == c["sha256"]
        # No secret and no local path (the job's cache, a temp dir) anywhere in the file's records.
        for text in (document, *attrs.values()):
            assert "s3cret" not in text and "someone" not in text
            assert str(cache) not in text and str(tmp_path) not in text

        # `pxdbg dataset info` shows it; `pxdbg overlay` carries it into the merged file.
        info = CliRunner().invoke(main, ["dataset", "info", str(out)])
        assert info.exit_code == 0
        for expected in (f"PXDBackgroundGenerator_convnet r{record['checkpoints'][1]['revision']}",
                         record["checkpoints"][0]["sha256"], f"source {server.url}", "IoV 2,10,2,-1",
                         "campaign mc", "runs (exp/run): 2/10"):
            assert expected in info.output, expected
        as_json = CliRunner().invoke(main, ["dataset", "info", "--provenance", str(out)])
        assert json.loads(as_json.output) == record
        merged = tmp_path / "merged.h5"
        overlay = CliRunner().invoke(main, ["overlay", "--signal", str(out), "--background", str(out),
                                            "--no-progress", "-o", str(merged)])
        assert overlay.exit_code == 0, overlay.output
        with DigitsReader(merged) as reader:
            carried = provenance.read(reader)
        assert carried["overlay"]["background"]["provenance"] == record
        assert carried["overlay"]["background"]["file"] == "bg.h5"
        shown = CliRunner().invoke(main, ["dataset", "info", str(merged)]).output
        assert "background: bg.h5" in shown and record["checkpoints"][1]["sha256"] in shown
    finally:
        server.stop()
