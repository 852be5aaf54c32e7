"""`pxdbg generate` picks its conditions source: ``--source`` before ``PXDBG_CONDITIONS``
before the embedded store, and the log says which source answered."""

from __future__ import annotations

import logging

import pytest
import torch
from click.testing import CliRunner

from conditions.iov import IntervalOfValidity as IoV
from conditions.snapshot import export_snapshot
from conditions.store import open_store
from pxdbg.cli import main
from pxdbg.digits import DigitsReader
from pxdbg.models.loading import save_generator
from registry.admin import publish_tag, upload_checkpoint
from registry.campaigns import Campaign, campaign_tag, create_campaign
from tests.pxdbg.tiny_models import tiny_convnet

torch.set_num_threads(1)


@pytest.fixture
def campaign_store(tmp_path):
    """Campaign "c" with one tiny convnet for exp 3 in an SQLite store, and a snapshot of it."""
    db = tmp_path / "c.db"
    with open_store(db) as store:
        create_campaign(store, Campaign(name="c"))
        file = save_generator(tmp_path / "c.safetensors", "convnet", tiny_convnet(3), campaign="c")
        upload_checkpoint(store, file, model="convnet", campaign="c", iov=IoV(3, 0, 3, -1))
        publish_tag(store, campaign_tag("c"))
        export_snapshot(store, [campaign_tag("c")], tmp_path / "snapshot")
    return db, tmp_path / "snapshot"


def generate(tmp_path, *args: str):
    out = tmp_path / "out.h5"
    result = CliRunner().invoke(main, ["-v", "generate", "--model", "convnet", "--events", "1", "--campaign", "c",
                                       "--runs", "3:1-2",
                                       "--seed", "1", "--no-progress", "-o", str(out), *args])
    return result, out


def test_source_argument_takes_precedence_over_the_environment(campaign_store, tmp_path, monkeypatch, caplog):
    db, _snapshot = campaign_store
    monkeypatch.setenv("PXDBG_CONDITIONS", str(tmp_path / "not-there"))
    with caplog.at_level(logging.INFO, logger="registry.resolve"):
        result, out = generate(tmp_path, "--source", str(db))
    assert result.exit_code == 0, result.output
    # The argument replaced the environment: the broken env source was never asked.
    assert "not-there" not in caplog.text
    answered = [r.getMessage() for r in caplog.records if r.name == "registry.resolve" and r.levelno == logging.INFO]
    assert len(answered) == 1 and answered[0].endswith(f"from sqlite:///{db}")  # run 2 came from the cache
    # The job log (not only -v) names the checkpoint and the source that answered, once per load.
    told = [line for line in result.output.splitlines() if ": checkpoint " in line]
    assert told == [f"exp 3 run 1: checkpoint PXDBackgroundGenerator_convnet r1 (tag {campaign_tag('c')}, "
                    f"IoV 3,0,3,-1) from sqlite:///{db}"]
    with DigitsReader(out) as reader:
        assert list(reader.run) == [1, 2] and reader.attrs["generator_loads"] == 1


def test_environment_sources_in_order_then_the_reason_is_logged(campaign_store, tmp_path, monkeypatch, caplog):
    _db, snapshot = campaign_store
    monkeypatch.setenv("PXDBG_CONDITIONS", f"{tmp_path / 'not-there'},{snapshot}")
    # A typo in the configured sources stops the job: no file, exit 1, the source named.
    result, out = generate(tmp_path)
    assert result.exit_code == 1 and "not-there" in result.output and "--failover" in result.output
    assert not out.exists()
    with caplog.at_level(logging.INFO, logger="registry.resolve"):
        result, _ = generate(tmp_path, "--failover")
    assert result.exit_code == 0, result.output
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "not-there" in warning and "NotAStoreError" in warning
    assert any(r.getMessage().endswith(f"from snapshot:{snapshot / 'metadata.sqlite'}") for r in caplog.records)


def test_source_and_checkpoint_exclude_each_other(campaign_store, tmp_path):
    db, _ = campaign_store
    result, out = generate(tmp_path, "--source", str(db), "--checkpoint", str(tmp_path / "c.safetensors"))
    assert result.exit_code == 2 and "not both" in result.output and not out.exists()


def test_generate_over_two_campaigns(campaign_store, tmp_path):
    """`--campaign` repeated: a run list spanning two campaigns' IoVs switches checkpoints at
    the boundary, and each run resolves in the campaign that covers it."""
    db, _snapshot = campaign_store
    with open_store(db) as store:
        create_campaign(store, Campaign(name="d"))
        file = save_generator(tmp_path / "d.safetensors", "convnet", tiny_convnet(4), campaign="d")
        upload_checkpoint(store, file, model="convnet", campaign="d", iov=IoV(4, 0, 4, -1))
        publish_tag(store, campaign_tag("d"))
    out = tmp_path / "two.h5"
    result = CliRunner().invoke(main, ["generate", "--model", "convnet", "--events", "1", "--campaign", "c",
                                       "--campaign", "d",
                                       "--runs", "3:7,4:1-2", "--seed", "1", "--no-progress",
                                       "--source", str(db), "-o", str(out)])
    assert result.exit_code == 0, result.output
    told = [line.split(": checkpoint ")[0] + " " + line.split("(tag ")[1].split(",")[0]
            for line in result.output.splitlines() if ": checkpoint " in line]
    assert told == [f"exp 3 run 7 {campaign_tag('c')}", f"exp 4 run 1 {campaign_tag('d')}"]
    with DigitsReader(out) as reader:
        assert list(reader.run) == [7, 1, 2] and reader.attrs["generator_loads"] == 2
        assert reader.attrs["generator_campaign"] == "c,d"


@pytest.mark.parametrize("bad, error", [([], TypeError), (["c", 3], TypeError), (("c", ""), ValueError), (5, TypeError)])
def test_module_refuses_bad_campaign_lists(bad, error):
    from pxdbg.module import PXDBackgroundGenerator

    with pytest.raises(error, match="campaign"):
        PXDBackgroundGenerator(campaign=bad)
