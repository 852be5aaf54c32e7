"""Beam conditions as payloads: validation of the JSON record, upload through the CLIs,
resolution per run across IoV boundaries (SQLite store and a live server)."""

from __future__ import annotations

import json

import pytest

from conditions.iov import IntervalOfValidity as IoV
from conditions.store import open_store
from registry.beam import BEAM_PAYLOAD, BeamConditions, upload_beam_conditions
from registry.exceptions import BeamConditionsError
from registry.resolve import CheckpointRegistry

GOOD = {"luminosity": 1.5, "her_current": 1000, "ler_current": 1200, "injection_fraction": 0.03}


def record(**changes) -> str:
    data = dict(GOOD)
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    return json.dumps(data)


def test_a_valid_record_round_trips_in_canonical_form():
    conditions = BeamConditions.from_json(record(extra={"ler_pressure_npa": 12.5}, description="run 42"))
    assert conditions.values() == (1.5, 1000.0, 1200.0, 0.03)
    again = BeamConditions.from_json(conditions.to_json())
    assert again == conditions and again.to_json() == conditions.to_json()
    # key order and spacing do not matter: equal conditions, equal bytes (one payload)
    reordered = json.dumps(dict(reversed(list(json.loads(record(extra={"ler_pressure_npa": 12.5},
                                                                  description="run 42")).items()))), indent=3)
    assert BeamConditions.from_json(reordered).to_json() == conditions.to_json()


@pytest.mark.parametrize("text, expected", [
    ('{"luminosity": 1.5, "her_current": 1000,', "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (b"\xff\xfe", "not UTF-8"),
    (record(her_current=None), "field 'her_current' is missing"),
    (record(her_current=None, injection_fraction=None), "field 'injection_fraction' is missing"),
    (record(luminosity=-0.5), "field 'luminosity': Input should be greater than or equal to 0 (got -0.5)"),
    (record(ler_current=-1), "field 'ler_current'"),
    (record(injection_fraction=1.5), "field 'injection_fraction': Input should be less than or equal to 1"),
    (record(extra={"pressure": -3}), "field 'extra.pressure'"),
    (record(extra={"Bad name": 3}), "extra quantity names"),
    (record(luminosity="1.5"), "field 'luminosity': Input should be a valid number (got '1.5')"),
    (record(luminosity=True), "field 'luminosity'"),
    (record(her_current=1e300), "field 'her_current': Input should be less than or equal to 100000"),
    (record(luminosty=2), "unknown field 'luminosty'"),
    (record(version=2), "version 2 is not understood"),
    (record().replace("1.5", "NaN"), "NaN is not a number"),
    (record().replace("1.5", "Infinity"), "Infinity is not a number"),
    ('{"luminosity": 1, "luminosity": 2, "her_current": 1, "ler_current": 1, "injection_fraction": 0}',
     "key 'luminosity' appears twice"),
    (" " * 70000, "at most"),
])
def test_bad_records_are_refused_with_the_field_named(text, expected):
    with pytest.raises(BeamConditionsError) as info:
        BeamConditions.from_json(text, where="run42.json")
    message = str(info.value)
    assert message.startswith("run42.json: ") and expected in message, message
    assert isinstance(info.value, ValueError)


def test_pxdbg_beam_check_and_upload_refuse_bad_records_before_writing(cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(record(luminosity=-1))
    result = cli("beam", "check", str(bad), status=1)
    assert "field 'luminosity'" in result.output and "greater than or equal to 0" in result.output
    cli("campaign", "create", "mc17")
    result = cli("beam", "upload", "--campaign", "mc17", "--iov", "0,1,0,5", "--conditions", str(bad), status=1)
    assert "field 'luminosity'" in result.output
    result = cli("beam", "upload", "--campaign", "mc17", "--iov", "0,1,0,5", "--luminosity", "1",
                 "--her-current", "-5", "--ler-current", "1200", "--injection-fraction", "0.03", status=1)
    assert "field 'her_current'" in result.output
    result = cli("beam", "upload", "--campaign", "mc17", "--iov", "0,1,0,5", "--luminosity", "1", status=2)
    assert "missing --her-current, --ler-current, --injection-fraction" in result.output
    with open_store(tmp_path / "admin.db") as store:
        assert store.list_payloads(BEAM_PAYLOAD) == []  # nothing was written
    good = tmp_path / "good.json"
    good.write_text(record())
    cli("beam", "check", str(good))
    result = cli("beam", "upload", "--campaign", "mc17", "--iov", "0,1,0,5", "--conditions", str(good))
    assert "BeamConditions r1" in result.output and "PXDBackgroundGenerator_mc17" in result.output
    # the same conditions again, given as values: the same payload, a second IoV
    result = cli("beam", "upload", "--campaign", "mc17", "--iov", "0,6,0,7", "--luminosity", "1.5",
                 "--her-current", "1000", "--ler-current", "1200", "--injection-fraction", "0.03")
    assert "BeamConditions r1" in result.output


@pytest.fixture
def beam_db(tmp_path, monkeypatch):
    """Tag "runs": exp 0 runs 1-5 at luminosity 1 (pxdbg's upload), runs 6.. at luminosity 2
    (the generic `conditionsdb upload` of a JSON file); exp 1 has a payload that is not a
    valid record (`conditionsdb upload` stores any bytes)."""
    from click.testing import CliRunner

    from conditions.cli import main as conditionsdb

    monkeypatch.delenv("CONDITIONSDB_URL", raising=False)
    db = tmp_path / "beam.db"
    with open_store(db) as store:
        store.create_tag("runs")
        upload_beam_conditions(store, BeamConditions.from_json(record(luminosity=1.0)), tag="runs", iov=IoV(0, 1, 0, 5))
    for text, iov in ((record(luminosity=2.0), "0,6,0,-1"), (record(luminosity=-3), "1,0,1,-1")):
        (tmp_path / "conditions.json").write_text(text)
        result = CliRunner().invoke(conditionsdb, ["--db", str(db), "upload", "runs", str(tmp_path / "conditions.json"),
                                                   "--name", BEAM_PAYLOAD, "--iov", iov])
        assert result.exit_code == 0, result.output
    with open_store(db) as store:
        store.set_tag_state("runs", "TESTING")
    return db


def test_conditions_resolve_per_run_across_iov_boundaries(beam_db, payload_cache):
    with CheckpointRegistry([str(beam_db)], cache=payload_cache) as registry:
        seen = {run: registry.resolve_beam_conditions(0, run, globaltag="runs") for run in (1, 5, 6, 7, 1000, 2)}
        assert {run: found.conditions.luminosity for run, found in seen.items()} == {
            1: 1.0, 5: 1.0, 6: 2.0, 7: 2.0, 1000: 2.0, 2: 1.0}
        assert seen[5].iov == IoV(0, 1, 0, 5) and seen[6].iov == IoV(0, 6, 0, -1)
        assert seen[1].payload.revision == 1 and seen[6].payload.revision == 2
        assert seen[2] is seen[1]  # inside the same IoV: the cached answer
        record_ = seen[6].record()
        assert record_["payload"] == BEAM_PAYLOAD and record_["iov"] == [0, 6, 0, -1]
        assert record_["values"]["luminosity"] == 2.0 and record_["source"].endswith("beam.db")
        # a stored record that is not valid is the source's answer: refused, named
        with pytest.raises(BeamConditionsError, match=r"BeamConditions r3: field 'luminosity'"):
            registry.resolve_beam_conditions(1, 3, globaltag="runs")
        with pytest.raises(Exception, match="no BeamConditions for exp 0 run 0"):
            registry.resolve_beam_conditions(0, 0, globaltag="runs")


def test_conditions_resolve_from_a_live_server(beam_db, tmp_path, payload_cache):
    from tests.registry.conftest import LiveServer

    server = LiveServer(beam_db, tmp_path / "server.log")
    try:
        with CheckpointRegistry([server.url], cache=payload_cache) as registry:
            assert registry.resolve_beam_conditions(0, 5, globaltag="runs").conditions.luminosity == 1.0
            found = registry.resolve_beam_conditions(0, 6, globaltag="runs")
            assert found.conditions.luminosity == 2.0 and found.source.startswith("http://127.0.0.1")
    finally:
        server.stop()
