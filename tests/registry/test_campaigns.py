"""Campaigns stored as generic conditions data: a tag per campaign plus a JSON record."""

from __future__ import annotations

import json

import pytest

from conditions.exceptions import FrozenTagError
from conditions.iov import IntervalOfValidity
from conditions.tags import GlobalTagState
from registry.campaigns import (
    CAMPAIGN_PAYLOAD,
    Campaign,
    campaign_from_tag,
    campaign_status,
    campaign_tag,
    create_campaign,
    get_campaign,
    list_campaigns,
    update_campaign,
)
from registry.exceptions import CampaignExistsError, InvalidCampaignError, UnknownCampaignError


def _campaign(name="phase3_early", **kw) -> Campaign:
    return Campaign(
        name=name,
        description="early phase 3 beam conditions",
        beam_conditions={"her_current_mA": 800, "ler_current_mA": 1000, "injection": "continuous"},
        luminosity=2.4e34,
        simulation_release="release-06-00-08",
        training_dataset="/belle/MC/BG/phase3_early/pxd-digits",
        **kw,
    )


def test_campaign_lives_in_its_own_tag_as_a_json_payload(store):
    status = create_campaign(store, _campaign(), user="tester")
    assert status.tag.name == "PXDBackgroundGenerator_phase3_early"
    assert status.tag.state is GlobalTagState.OPEN
    assert "early phase 3 beam conditions" in status.tag.description
    records = store.iovs(campaign_tag("phase3_early"), name=CAMPAIGN_PAYLOAD)
    assert [r.iov for r in records] == [IntervalOfValidity.always()]
    # The record is plain JSON: readable without pxdbg.
    raw = json.loads(store.local_path(records[0].payload).read_bytes())
    assert raw["schema"] == 1 and raw["luminosity"] == 2.4e34
    assert get_campaign(store, "phase3_early") == _campaign()


def test_update_adds_a_revision_and_keeps_unknown_fields(store):
    create_campaign(store, _campaign(extra={"future_field": [1, 2]}))
    changed = Campaign(**{**_campaign().__dict__, "luminosity": 3.0e34, "extra": {"future_field": [1, 2]}})
    update_campaign(store, changed)
    got = get_campaign(store, "phase3_early")
    assert got.luminosity == 3.0e34 and got.extra == {"future_field": [1, 2]}
    assert [p.revision for p in store.list_payloads(CAMPAIGN_PAYLOAD)] == [1, 2]


def test_list_and_errors(sqlite_store):
    create_campaign(sqlite_store, _campaign("b_late"))
    create_campaign(sqlite_store, _campaign("a_early"))
    sqlite_store.create_tag("PXDBackgroundGenerator_halfmade")  # no record: not listed
    assert [s.campaign.name for s in list_campaigns(sqlite_store)] == ["a_early", "b_late"]
    with pytest.raises(CampaignExistsError):
        create_campaign(sqlite_store, _campaign("a_early"))
    with pytest.raises(UnknownCampaignError):
        get_campaign(sqlite_store, "nope")
    with pytest.raises(UnknownCampaignError):
        campaign_status(sqlite_store, "halfmade")
    with pytest.raises(UnknownCampaignError):
        update_campaign(sqlite_store, _campaign("nope"))


@pytest.mark.parametrize("bad", ["", "../x", "a b", "a.b", "-x", "x" * 101, None])
def test_bad_campaign_names_are_refused(bad):
    with pytest.raises(InvalidCampaignError):
        Campaign(name=bad)


def test_bad_records_are_refused():
    with pytest.raises(InvalidCampaignError):
        Campaign(name="x", luminosity=-1.0)
    with pytest.raises(InvalidCampaignError):
        Campaign.from_json(b"not json")
    with pytest.raises(InvalidCampaignError):
        Campaign.from_json(json.dumps({"schema": 99, "name": "x"}))
    assert campaign_from_tag("PXDBackgroundGenerator_x") == "x"
    assert campaign_from_tag("PXDBackgroundGenerator") is None


def test_frozen_campaign_record_cannot_change(sqlite_store):
    create_campaign(sqlite_store, _campaign())
    sqlite_store.set_tag_state(campaign_tag("phase3_early"), "TESTING")
    with pytest.raises(FrozenTagError):
        update_campaign(sqlite_store, _campaign())
