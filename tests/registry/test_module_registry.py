"""The generator module on a store-backed registry: checkpoint switches at IoV boundaries
(and only there), wrong checkpoints refused before any event, and the embedded default."""

from __future__ import annotations

import pytest
import torch

from conditions.iov import IntervalOfValidity as IoV
from conditions.store import open_store
from pxdbg.models import get_model
from pxdbg.models.loading import save_generator
from pxdbg.digits import PXDDigits
from pxdbg.module import PXDBackgroundGenerator
from registry.admin import publish_tag, upload_checkpoint
from registry.campaigns import Campaign, campaign_tag, create_campaign
from registry.exceptions import ManifestMismatchError
from registry.resolve import CheckpointRegistry, payload_name

torch.set_num_threads(1)


def tiny(model: str, path, seed: int, **manifest):
    """A narrow (cheap) model of ``model``'s architecture, saved with its manifest."""
    torch.manual_seed(seed)
    network = get_model(model).Model(width=1 / 32)
    return save_generator(path, model, network, **manifest)


@pytest.fixture
def campaign_db(tmp_path):
    """Campaign "early": exp 1 runs 0-9 -> checkpoint A, exp 1 runs 10.. -> checkpoint B.
    Campaign "late": exp 2 onwards -> checkpoint C."""
    db = tmp_path / "campaigns.db"
    with open_store(db) as store:
        create_campaign(store, Campaign(name="early"))
        create_campaign(store, Campaign(name="late"))
        for name, campaign, iov, seed in (("a", "early", IoV(1, 0, 1, 9), 1), ("b", "early", IoV(1, 10, 1, -1), 2),
                                          ("c", "late", IoV(2, 0, -1, -1), 3)):
            file = tiny("convnet", tmp_path / f"{name}.safetensors", seed, campaign=campaign)
            upload_checkpoint(store, file, model="convnet", campaign=campaign, iov=iov)
        publish_tag(store, campaign_tag("early"))
        publish_tag(store, campaign_tag("late"))
    return db


def test_module_switches_checkpoint_only_at_iov_boundaries(campaign_db, monkeypatch):
    # The module's default path: registry.resolve_checkpoint with sources from the environment.
    monkeypatch.setenv("PXDBG_CONDITIONS", str(campaign_db))
    monkeypatch.setenv("PXDBG_NO_EMBEDDED", "1")
    module = PXDBackgroundGenerator("convnet", seed=7, campaign="early")
    module.initialize()
    loaded = []
    for run in (1, 2, 9, 10, 11, 500, 3):
        module.begin_run(1, run)
        loaded.append(module.stats.loads)
    # A at run 1, B at run 10, A again at run 3: three loads, none within an IoV.
    assert loaded == [1, 1, 1, 2, 2, 2, 3]
    assert module.manifest.campaign == "early"
    digits = module.event()
    assert module.stats.events == 1 and isinstance(digits, PXDDigits)
    module.terminate()


def test_one_job_across_two_campaigns(campaign_db, tmp_path):
    registry = CheckpointRegistry([campaign_db], use_embedded=False)
    module = PXDBackgroundGenerator("convnet", seed=7, resolver=registry.as_resolver(campaign=["late", "early"]))
    module.initialize()
    campaigns = []
    for exp, run in ((1, 5), (1, 6), (1, 20), (2, 0), (2, 1)):
        module.begin_run(exp, run)
        campaigns.append(module.manifest.campaign)
    assert campaigns == ["early", "early", "early", "late", "late"]
    assert module.stats.loads == 3


def test_wrong_checkpoint_is_refused_before_any_event(tmp_path):
    db = tmp_path / "wrong.db"
    with open_store(db) as store:
        store.create_tag("PXDBackgroundGenerator")
        # A resnet checkpoint stored under the convnet payload name (upload would refuse it).
        store.add_payload(payload_name("convnet"), tiny("resnet", tmp_path / "r.safetensors", 1))
        store.add_iov("PXDBackgroundGenerator", payload_name("convnet"), 1, IoV.always())
        publish_tag(store, "PXDBackgroundGenerator")
    registry = CheckpointRegistry([db], use_embedded=False)
    module = PXDBackgroundGenerator("convnet", seed=1, resolver=registry.as_resolver())
    module.initialize()
    with pytest.raises(ManifestMismatchError, match="resnet"):
        module.begin_run(0, 1)
    with pytest.raises(RuntimeError, match="no checkpoint loaded"):
        module.event()
    assert module.stats.events == 0 and module.stats.loads == 0
