"""The web pages in process (TestClient on a real SQLite store): content, JSON twins,
escaping of hostile text, error pages, paging. The browser tests (test_ui_browser.py)
drive the same pages in Chromium."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from conditions.iov import IntervalOfValidity as IoV
from conditions.server import create_app
from conditions.store import open_store

from . import ui_data
from .ui_data import CHECKPOINT, HOSTILE, HOSTILE_USER


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ui")
    store = open_store(f"sqlite:///{workdir / 'c.db'}", workdir / "payloads")
    facts = ui_data.build(store, workdir / "inputs")
    with TestClient(create_app(store)) as client:
        client.store, client.facts, client.workdir = store, facts, workdir
        yield client
    store.close()


PAGES = [
    "/ui/", "/ui/tags?state=TESTING", "/ui/tags/calib_main", "/ui/tags/calib_main?exp=0&run=75",
    "/ui/tags/calib_main?exp=1&from=0&to=10&page=1", "/ui/payloads/BeamSpot", "/ui/payloads/BeamSpot/2",
    "/ui/payloads/PXDGain/1", f"/ui/payloads/{CHECKPOINT}/1", "/ui/diff",
    "/ui/diff?tag_a=calib_main&tag_b=calib_next", "/ui/diff?tag_a=calib_main&tag_b=calib_next&exp=0&run=130",
    "/ui/audit", f"/ui/audit?user={HOSTILE_USER}", "/ui/audit?tag=calib_next",
]


def twin_of(body: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" class="json-link">', body)
    return html.unescape(found.group(1)) if found else None


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_escapes_and_has_a_json_twin(site, path):
    page = site.get(path)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    body = page.text
    # Hostile text never reaches the page as markup: only escaped, as text.
    for raw in (HOSTILE, HOSTILE_USER, "<script>window", "<img src=x", "<b onmouseover"):
        assert raw not in body
    assert "<script" not in body.replace('<script src="/ui/static/ui.js', "")
    twin = twin_of(body)
    if path != "/ui/diff":
        answer = site.get(twin)
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json", twin
        assert parse_qs(urlsplit(twin).query) == parse_qs(urlsplit(path).query) or "payloads/" in path


def test_hostile_text_shows_as_text(site):
    tags = site.get("/ui/tags").text
    assert HOSTILE not in tags and HOSTILE in html.unescape(tags)
    gain = site.get("/ui/payloads/PXDGain/1").text
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in gain  # metadata key and value, as text
    assert "mallory&lt;b onmouseover=" in gain
    audit = site.get("/ui/audit").text
    assert "mallory&lt;b onmouseover=" in audit


def test_tags_page_counts_and_filters(site):
    data = site.get("/api/v1/browse/tags").json()
    rows = {t["name"]: t for t in data["tags"]}
    assert (rows["calib_main"]["iov_count"], rows["calib_main"]["payload_count"]) == (5, 3)
    assert (rows["calib_next"]["iov_count"], rows["calib_next"]["state"]) == (6, "OPEN")
    assert data["by_state"]["OPEN"] == 1 and data["by_state"]["TESTING"] == 1
    assert [t["name"] for t in site.get("/api/v1/browse/tags", params={"state": "OPEN"}).json()["tags"]] == ["calib_next"]
    assert [t["name"] for t in site.get("/api/v1/browse/tags", params={"q": "NEXT"}).json()["tags"]] == ["calib_next"]
    assert [t["name"] for t in site.get("/api/v1/browse/tags", params={"q": "calib_m*"}).json()["tags"]] == ["calib_main"]
    page = site.get("/ui/tags", params={"q": "nothing-like-it"}).text
    assert "No global tag matches." in page and "0 of 2 global tags" in page


@pytest.mark.parametrize("run", [0, 49, 50, 99, 100, 149, 150, 10_000])
def test_winners_at_a_run_follow_the_resolution_rules(site, run):
    data = site.get("/api/v1/browse/tags/calib_main", params={"exp": 0, "run": run}).json()
    answers = {a["name"]: a for a in data["at"]["answers"]}
    expected = ui_data.beamspot_revision(0, run)
    if expected is None:
        assert "BeamSpot" not in answers
    else:
        assert answers["BeamSpot"]["winner"]["payload"]["revision"] == expected
        shadowed = [s["revision"] for s in answers["BeamSpot"]["shadowed"]]
        assert shadowed == ([1] if 50 <= run <= 99 else [])
        # the same answer as a job gets from the resolve endpoint
        resolved = site.get("/api/v1/resolve", params={"tag": "calib_main", "name": "BeamSpot", "exp": 0,
                                                       "run": run}).json()
        assert resolved["payload"]["revision"] == expected
    page = site.get("/ui/tags/calib_main", params={"exp": 0, "run": run}).text
    if expected is not None:
        assert f'data-name="BeamSpot" data-revision="{expected}"' in page


def test_timeline_of_one_experiment(site):
    data = site.get("/api/v1/browse/tags/calib_main", params={"exp": 0}).json()
    assert data["experiments"] == [0, 1]
    rows = {r["name"]: r["segments"] for r in data["timeline"]["rows"]}
    assert [(s["first_run"], s["last_run"], s["revision"], [x["revision"] for x in s["shadowed"]])
            for s in rows["BeamSpot"]] == [(0, 49, 1, []), (50, 99, 2, [1]), (100, 149, 2, [])]
    assert rows["PXDGain"] == [{"first_run": 0, "last_run": None, "revision": 1,
                                "iov_id": rows["PXDGain"][0]["iov_id"], "shadowed": []}]
    page = site.get("/ui/tags/calib_main", params={"exp": 0}).text
    assert page.count('class="bar"') == 5  # three BeamSpot segments, PXDGain and the checkpoint
    assert "BeamSpot r2 wins in runs 50–99 over r1" in page


def test_iov_table_pages(site):
    store = site.store
    store.create_tag("many")
    payload = store.add_payload("Many", b"many")
    store.add_iovs("many", [("Many", payload.revision, IoV(0, run, 0, run)) for run in range(250)])
    first = site.get("/api/v1/browse/tags/many").json()["iovs"]
    assert (first["total"], first["pages"], len(first["items"])) == (250, 3, 100)
    last = site.get("/api/v1/browse/tags/many", params={"page": 3}).json()["iovs"]
    assert len(last["items"]) == 50 and last["items"][-1]["iov"]["first_run"] == 249
    clamped = site.get("/api/v1/browse/tags/many", params={"page": 99, "per_page": 200}).json()["iovs"]
    assert (clamped["page"], len(clamped["items"])) == (2, 50)
    page = site.get("/ui/tags/many", params={"page": 2}).text
    assert "page 2 of 3" in page and 'rel="next"' in page and 'rel="prev"' in page
    only = site.get("/api/v1/browse/tags/calib_main", params={"payload": "BeamSpot"}).json()["iovs"]
    assert only["total"] == 3 and {i["payload"]["name"] for i in only["items"]} == {"BeamSpot"}


def test_the_cache_sees_changes(site):
    store = site.store
    store.create_tag("moving")
    payload = store.add_payload("Moving", b"moving")
    store.add_iov("moving", "Moving", payload.revision, IoV(0, 0, 0, 10))
    assert site.get("/api/v1/browse/tags/moving").json()["counts"]["iovs"] == 1
    store.add_iov("moving", "Moving", payload.revision, IoV(0, 11, 0, 20))
    assert site.get("/api/v1/browse/tags/moving").json()["counts"]["iovs"] == 2
    store.modify_tag("moving", description="now described")
    assert "now described" in site.get("/ui/tags/moving").text


def test_checkpoint_page_shows_manifest_and_report(site):
    data = site.get(f"/api/v1/browse/payloads/{CHECKPOINT}/1").json()
    assert data["manifest_source"] == "safetensors header"
    assert (data["manifest"]["model"], data["manifest"]["training_steps"]) == ("convnet", 60)
    assert data["demo"] == {"value": True, "why": "inferred from the manifest's description"}
    assert data["content"]["format"] == "safetensors"
    assert data["content"]["safetensors"]["tensor_count"] == 2
    assert data["content"]["safetensors"]["parameter_count"] == 16
    assert data["used_in"][0]["tag"] == "calib_main"
    (report,) = data["reports"]
    assert report["images"] == ["occupancy.png"] and report["scalars"]["charge_w1"] == 21.87
    assert report["counts"] == {"n_generated": 4, "n_reference": 4}
    page = site.get(f"/ui/payloads/{CHECKPOINT}/1").text
    for text in ("Checkpoint manifest", "convnet", "train.h5 sha256:abc", "Demo checkpoint", "Validation report"):
        assert text in page
    image_url = html.unescape(re.search(r'<img src="([^"]+)"', page).group(1))
    image = site.get(image_url)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content == ui_data.PLOT.read_bytes()
    assert image.headers["x-content-type-options"] == "nosniff"
    assert site.get(image_url.replace("occupancy", "nothing")).status_code == 404
    assert site.get(image_url.replace("occupancy.png", "x.svg")).status_code == 422
    # a report of another revision is not this payload's
    assert site.get("/api/v1/browse/payloads/BeamSpot/1/reports/1/occupancy.png").status_code == 404


def test_manifest_from_payload_metadata_wins(site):
    site.store.add_payload("Described", b"plain bytes",
                           metadata={"manifest": {"model": "resnet", "architecture_version": 1, "training_steps": 0}})
    data = site.get("/api/v1/browse/payloads/Described/1").json()
    assert data["manifest_source"] == "payload metadata" and data["content"]["format"] == "other"
    assert data["demo"] == {"value": True, "why": "inferred: trained for 0 steps"}
    assert data["reports"] == []


def test_damaged_payload_is_reported_not_shown(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "payloads")
    facts = ui_data.build(store, tmp_path / "inputs")
    blob = store.local_path(facts["checkpoint"])
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with TestClient(create_app(store)) as client:
        page = client.get(f"/ui/payloads/{CHECKPOINT}/1")
        assert page.status_code == 200
        assert "is damaged" in page.text and "Checkpoint manifest" not in page.text
        assert client.get(f"/api/v1/browse/payloads/{CHECKPOINT}/1").json()["content"]["problem"]
    store.close()


def test_errors_are_pages_under_ui_and_json_elsewhere(site):
    missing = site.get("/ui/tags/no_such_tag")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "no global tag named &#39;no_such_tag&#39;" in missing.text
    bad = site.get("/ui/tags/calib_main", params={"exp": "abc"})
    assert bad.status_code == 422 and "exp" in bad.text and bad.headers["content-type"].startswith("text/html")
    assert site.get("/ui/nowhere").status_code == 404
    assert site.get("/ui/tags/calib_main", params={"from": 9, "to": 3}).status_code == 422
    assert site.get("/ui/diff", params={"tag_a": "calib_main", "tag_b": "calib_next", "exp": 0}).status_code == 422
    api = site.get("/api/v1/tags/no_such_tag")
    assert api.status_code == 404 and api.json()["code"] == "unknown_tag"
    assert site.get("/api/v1/browse/tags/no_such_tag").json()["code"] == "unknown_tag"
    home = site.get("/", follow_redirects=False)
    assert home.status_code == 307 and home.headers["location"] == "/ui/"
    assert site.get("/ui/static/../app.py").status_code == 404
    assert site.get("/ui/static/ui.css").headers["content-type"].startswith("text/css")


def test_diff_at_a_run(site):
    data = site.get("/api/v1/browse/diff", params={"tag_a": "calib_main", "tag_b": "calib_next",
                                                    "exp": 0, "run": 130}).json()
    rows = {r["name"]: r for r in data["at"]["payloads"]}
    assert rows["BeamSpot"]["a"]["payload"]["revision"] == 2 and rows["BeamSpot"]["b"]["payload"]["revision"] == 4
    assert not rows["BeamSpot"]["same"] and rows["PXDGain"]["same"]
    assert [r["payload"]["revision"] for r in data["only_b"]] == [4] and data["only_a"] == []
    assert site.get("/api/v1/browse/diff", params={"tag_a": "calib_main", "tag_b": "calib_next",
                                                    "exp": 0, "run": 10}).json()["identical"]


def test_audit_filters_by_tag_and_user(site):
    by_bob = site.get("/api/v1/audit", params={"user": "bob"}).json()
    assert by_bob and {e["who"] for e in by_bob} == {"bob"}
    hostile = site.get("/api/v1/audit", params={"user": HOSTILE_USER}).json()
    assert [(e["action"], e["tag"]) for e in hostile] == [("iov.add", "calib_main"), ("payload.add", None)]
    both = site.get("/api/v1/audit", params={"user": "alice", "tag": "calib_main"}).json()
    assert both and all(e["who"] == "alice" and e["tag"] == "calib_main" for e in both)
    page = site.get("/ui/audit", params={"user": "bob"}).text
    assert f"{len(by_bob)} entries, newest first" in page


def test_empty_form_fields_mean_not_given(site):
    assert site.get("/ui/tags", params={"state": "", "q": ""}).status_code == 200
    page = site.get("/ui/tags/calib_main", params={"exp": "0", "from": "", "to": "", "run": "", "payload": ""})
    assert page.status_code == 200
    assert site.get("/ui/diff", params={"tag_a": "calib_main", "tag_b": "calib_next", "exp": "", "run": ""}).status_code == 200
    assert site.get("/ui/tags", params={"state": "BOGUS"}).status_code == 422
    assert site.get("/api/v1/browse/tags/calib_main", params={"run": "99999999999"}).status_code == 422
    assert site.get("/api/v1/browse/tags/calib_main", params={"run": "-1"}).status_code == 422


def test_client_audit_by_user_over_http(site):
    from conditions.client import ConditionsClient

    from .conftest import start_server

    server = start_server(f"sqlite:///{site.workdir / 'c.db'}", site.workdir / "payloads", site.workdir / "server.log")
    try:
        client = ConditionsClient(server.url, timeout=(2, 10))
        entries = client.audit(who="bob", limit=1000)
        assert entries and {e.who for e in entries} == {"bob"}
        assert [e.entry_id for e in entries] == [e.entry_id for e in site.store.audit(who="bob", limit=1000)]
    finally:
        server.stop()


def test_names_with_every_allowed_character_link_right(site):
    site.store.create_tag("gt:2026+v1-a_b")
    payload = site.store.add_payload("Odd-name+1", b"odd")
    site.store.add_iov("gt:2026+v1-a_b", "Odd-name+1", payload.revision, IoV(0, 0, -1, -1))
    listing = site.get("/ui/tags").text
    assert 'href="/ui/tags/gt%3A2026%2Bv1-a_b"' in listing
    page = site.get("/ui/tags/gt%3A2026%2Bv1-a_b")
    assert page.status_code == 200 and 'href="/ui/payloads/Odd-name%2B1/1"' in page.text
    assert site.get("/ui/payloads/Odd-name%2B1/1").status_code == 200


def test_timeline_windows_outside_the_runs(site):
    for params in ({"exp": 0, "from": 5000}, {"exp": 0, "to": 0}, {"exp": 0, "from": 100, "to": 100},
                   {"exp": 7, "run": 3}, {"exp": 2**31 - 1, "run": 2**31 - 1}):
        page = site.get("/ui/tags/calib_main", params=params)
        assert page.status_code == 200, (params, page.text[-300:])


def test_demo_flag():
    from conditions.server.browse import demo_flag

    assert demo_flag(None) is None
    # Untrained weights are not for physics whatever the field says (as the registry's
    # --require-production rule); a plain `demo: false` is what older manifests read as.
    assert demo_flag({"demo": False, "training_steps": 0})["value"] is True
    assert demo_flag({"demo": False, "training_steps": 300})["value"] is False
    assert demo_flag({"demo": True, "training_steps": 300})["value"] is True
    assert demo_flag({"training_steps": 10, "description": "UNTRAINED placeholder"})["value"] is True
    assert demo_flag({"training_steps": 10, "description": "demonstrates good agreement"})["value"] is None
