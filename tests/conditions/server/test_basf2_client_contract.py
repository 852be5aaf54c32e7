"""basf2's Python conditions client (``b2conditionsdb``) against a real server, request by request.

basf2 is not installed here, so each test replays exactly the HTTP requests that basf2's
code sends (paths, parameters, bodies, headers, credentials) and reads exactly the fields
that basf2's code reads, in the way it reads them. Each test names the basf2 file (all in
framework/scripts/conditions_db/ of belle2/basf2) and the function it mirrors. The facts
used, as read from basf2:

* ``ConditionsDB.__init__`` (__init__.py): ``HEAD {base}/v2/globalTags`` must succeed
  (else "No working database servers configured"); afterwards every request carries
  ``Accept: application/json`` and ``Cache-Control: no-cache``; ``b2conditionsdb``
  (cli_main.py ``main``) sends HTTP Basic credentials, by default ``commonDBUser`` and a
  fixed password, with every request; ``--http-user``/``--http-password`` change them.
* ``ConditionsDB.request``: URL ``base.rstrip('/') + '/v2/' + url.lstrip('/')``; an
  answer >= 300 is reported from its JSON ``code``, ``reason`` and ``message``; any other
  answer but HEAD and 204 must be JSON.
* ``encode_name``: ``urllib.parse.quote(name, safe="")`` for names in paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
from pathlib import Path

import pytest
import requests
from dateutil.parser import parse as parse_date
from requests.auth import HTTPBasicAuth
from urllib3.fields import RequestField
from urllib3.filepost import encode_multipart_formdata

from conditions.client import ConditionsClient
from conditions.iov import IntervalOfValidity as IoV

#: b2conditionsdb's default --http-user/--http-password (cli_main.py get_argument_parser)
DEFAULT_USER = ("commonDBUser", "Eil9ohphoo2quot")


def encode_name(name: str) -> str:
    return urllib.parse.quote(name, safe="")


class RequestError(RuntimeError):
    pass


class Basf2Client:
    """The request behaviour of basf2's ``ConditionsDB`` (framework/scripts/conditions_db/
    __init__.py), restated: connection check, URL joining, error reporting."""

    def __init__(self, base_url: str, user: tuple[str, str] = DEFAULT_USER):
        self.session = requests.Session()
        self.base = base_url.rstrip("/") + "/"
        check = self.session.request("HEAD", self.base + "v2/globalTags", timeout=10)
        check.raise_for_status()
        self.session.headers.update({"Accept": "application/json", "Cache-Control": "no-cache"})
        self.session.auth = HTTPBasicAuth(*user)

    def request(self, method: str, url: str, **kwargs) -> requests.Response:
        answer = self.session.request(method, self.base + "v2/" + url.lstrip("/"), timeout=30, **kwargs)
        if answer.status_code >= 300:
            body = answer.json()  # a non-JSON error would be reported as such by basf2
            raise RequestError(f"Request {method} {url} returned {body['code']} {body['reason']}: "
                               f"{body.get('message', '')}")
        if method != "HEAD" and answer.status_code != 204:
            answer.json()
        return answer

    # -- __init__.py, one method each --------------------------------------------------
    def get_globalTags(self) -> dict[str, dict]:
        return {tag["name"]: tag for tag in self.request("GET", "/globalTags").json()}

    def get_globalTagInfo(self, name: str) -> dict:
        return self.request("GET", "/globalTag/{}".format(encode_name(name))).json()

    def get_globalTagType(self, name: str) -> dict | None:
        types = {e["name"]: e for e in self.request("GET", "/globalTagType").json()}
        return types.get(name)

    def create_globalTag(self, name: str, description: str, user: str) -> dict:
        info = {"name": name, "description": description, "modifiedBy": user, "isDefault": False}
        return self.request("POST", "/globalTag/DEV", json=info).json()

    def get_all_iovs(self, tag: str, exp: int | None = None, run: int | None = None) -> list[tuple]:
        tag = encode_name(tag)  # escaped here, and the query string escapes it again
        if exp is not None:
            answer = self.request("GET", "/iovPayloads", params={"gtName": tag, "expNumber": exp, "runNumber": run})
        else:
            answer = self.request("GET", f"/globalTag/{tag}/globalTagPayloads")
        found = []
        for item in answer.json():
            payload = item["payload" if "payload" in item else "payloadId"]
            iovs = [item["payloadIov"]] if "payloadIov" in item else item["payloadIovs"]
            for iov in iovs:  # PayloadInformation.from_json
                found.append((payload["basf2Module"]["name"], payload["revision"], payload["checksum"],
                              (iov["expStart"], iov["runStart"], iov["expEnd"], iov["runEnd"]),
                              payload["payloadId"], iov["payloadIovId"], payload["payloadUrl"],
                              payload["baseUrl"]))
        return sorted(found)

    def get_payloads(self, tag: str) -> dict[tuple[str, str], int]:
        answer = self.request("GET", "/globalTag/{}/payloads".format(encode_name(tag)))
        return {(p["basf2Module"]["name"], p["checksum"]): p["payloadId"] for p in answer.json()}

    def check_payloads(self, payloads, information: str = "payloadId") -> dict:
        query = [{"name": name, "checksum": checksum} for name, checksum in payloads]
        answer = self.request("POST", "/checkPayloads", json=query)
        return {(p["basf2Module"]["name"], p["checksum"]): p[information] for p in answer.json()}

    def create_payload(self, module: str, filename: str, checksum: str) -> int:
        fields = []
        for name, contents, mimetype in [
            (filename, open(filename, "rb").read(), "application/x-root"),
            ("json", json.dumps({"checksum": checksum, "isDefault": False}), "application/json"),
        ]:
            field = RequestField(name=name, data=contents)
            field.make_multipart(content_type=mimetype)
            fields.append(field)
        body, content_type = encode_multipart_formdata(fields)
        content_type = "".join(("multipart/mixed",) + content_type.partition(";")[1:])
        answer = self.request("POST", "/package/dbstore/module/{}/payload".format(encode_name(module)),
                              data=body, headers={"Content-Type": content_type})
        return answer.json()["payloadId"]

    def create_iov(self, tag_id: int, payload_id: int, e1: int, r1: int, e2: int, r2: int) -> int:
        answer = self.request("POST", f"/globalTagPayload/{tag_id},{payload_id}/payloadIov/{e1},{r1},{e2},{r2}")
        return answer.json()["payloadIovId"]

    def get_iovs(self, tag: str) -> dict[tuple, int]:
        answer = self.request("GET", "/globalTag/{}/globalTagPayloads".format(encode_name(tag)))
        result = {}
        for payload in answer.json():
            payload_id = payload["payloadId"]["payloadId"]
            for iov in payload["payloadIovs"]:
                result[(payload_id, iov["expStart"], iov["runStart"], iov["expEnd"], iov["runEnd"])] = \
                    iov["payloadIovId"]
        return result


@pytest.fixture(scope="module")
def server(live_server):
    return live_server


def _admin_user(secret: str) -> tuple[str, str]:
    return ("admin-test", secret)  # b2conditionsdb --http-user admin-test --http-password TOKEN


def test_connection_check(server):
    """__init__.py ``ConditionsDB.__init__``: the HEAD check that made every command stop."""
    live, _, _ = server
    for base in (live.url, live.url + "/"):
        client = Basf2Client(base)
        assert client.session.head(client.base + "v2/globalTags", timeout=10).status_code == 200
    assert requests.head(live.url + "/v2/noSuchThing", timeout=10).status_code >= 400


def test_tag_create_list_show_and_state(server):
    """cli_main.py ``command_tag_create`` (``get_globalTagType``, ``POST /globalTag/{type}``),
    ``command_tag_list``, ``print_globaltag`` (``tag show``, ``tag list --detail``) and
    ``change_state`` (``tag state``)."""
    live, _, secret = server
    anonymous = Basf2Client(live.url)
    assert anonymous.get_globalTagType("DEV") == {"name": "DEV", "description": "every global tag of this server"}
    assert anonymous.get_globalTagType("RELEASE") is None  # basf2: "Unknown globaltag type", exit 1
    with pytest.raises(RequestError, match="Unauthorized: unknown or revoked token"):
        anonymous.create_globalTag("b2c_tag", "no token", "alice")  # the default credentials
    admin = Basf2Client(live.url, _admin_user(secret))
    created = admin.create_globalTag("b2c_tag:main+1", "made by b2conditionsdb", "alice")
    assert isinstance(created["globalTagId"], int) and created["name"] == "b2c_tag:main+1"
    with pytest.raises(RequestError, match="Conflict"):
        admin.create_globalTag("b2c_tag:main+1", "again", "alice")

    # tag list: the summary table, then --detail
    listed = anonymous.get_globalTags()["b2c_tag:main+1"]
    row = [listed["globalTagId"], listed["name"], listed.get("description", ""), listed["globalTagType"]["name"],
           listed["globalTagStatus"]["name"], listed["payloadCount"]]
    assert row == [created["globalTagId"], "b2c_tag:main+1", "made by b2conditionsdb", "DEV", "OPEN", 0]
    # tag show: GET /globalTag/{encode_name(name)}
    info = anonymous.get_globalTagInfo("b2c_tag:main+1")
    for item in (info, listed):
        created_at, modified_at = parse_date(item["dtmIns"]), parse_date(item["dtmMod"])
        created_at.astimezone(tz=None).strftime("%Y-%m-%d %H:%M:%S local time")
        assert created_at.tzinfo is not None and modified_at >= created_at
        assert item["modifiedBy"] == "admin-test"  # the token's name, not the claimed user

    # tag state NAME TESTING: PUT /globalTag/{name}/updateGlobalTagStatus/{state}
    admin.request("PUT", f"/globalTag/{encode_name('b2c_tag:main+1')}/updateGlobalTagStatus/TESTING")
    assert anonymous.get_globalTagInfo("b2c_tag:main+1")["globalTagStatus"]["name"] == "TESTING"
    with pytest.raises(RequestError, match="Conflict: .*cannot go from TESTING to RUNNING"):
        admin.request("PUT", f"/globalTag/{encode_name('b2c_tag:main+1')}/updateGlobalTagStatus/RUNNING")
    with pytest.raises(RequestError, match="Unauthorized"):
        anonymous.request("PUT", f"/globalTag/{encode_name('b2c_tag:main+1')}/updateGlobalTagStatus/OPEN")


def _testing_payloads(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    files = {"B2CBeam": [(1, b"beam one"), (2, b"beam two")], "B2CGain": [(1, os.urandom(3000))]}
    for name, revisions in files.items():
        for revision, data in revisions:
            (directory / f"dbstore_{name}_rev_{revision}.root").write_bytes(data)
    text = directory / "database.txt"
    text.write_text("dbstore/B2CBeam 1 0,0,0,-1\ndbstore/B2CBeam 2 1,0,-1,-1\ndbstore/B2CGain 1 0,0,-1,-1\n")
    return text


def _basf2_upload(client: Basf2Client, tag: str, database: Path) -> tuple[int, int]:
    """__init__.py ``ConditionsDB.upload`` (what cli_upload.py ``command_upload`` runs):
    existing payloads and IoVs first, then only what is missing; then the revisions.
    Returns (payloads created, IoVs created)."""
    entries = []
    for line in database.read_text().splitlines():
        name, revision, iov = line.split()
        module = name.split("/")[1]
        path = database.parent / f"dbstore_{module}_rev_{revision}.root"
        entries.append((module, str(path), hashlib.md5(path.read_bytes()).hexdigest(),
                        tuple(int(v) for v in iov.split(","))))
    tag_id = client.get_globalTagInfo(tag)["globalTagId"]
    existing_payloads = client.check_payloads({(m, c) for m, _, c, _ in entries})
    existing_iovs = client.get_iovs(tag)
    made_payloads = made_iovs = 0
    payload_ids = {}
    for module, path, checksum, _ in entries:
        key = (module, checksum)
        if key not in payload_ids:
            if key in existing_payloads:
                payload_ids[key] = existing_payloads[key]
            else:
                payload_ids[key] = client.create_payload(module, path, checksum)
                made_payloads += 1
    for module, _, checksum, iov in entries:
        payload_id = payload_ids[(module, checksum)]
        if (payload_id,) + iov not in existing_iovs:
            assert isinstance(client.create_iov(tag_id, payload_id, *iov), int)
            made_iovs += 1
    revisions = client.check_payloads({(m, c) for m, _, c, _ in entries}, "revision")  # get_revisions
    assert set(revisions) == {(m, c) for m, _, c, _ in entries} and all(r >= 1 for r in revisions.values())
    return made_payloads, made_iovs


def test_upload_like_b2conditionsdb(server, tmp_path):
    """__init__.py ``ConditionsDB.upload``: ``get_globalTagInfo``, ``check_payloads``
    (``POST /checkPayloads``), ``get_iovs``, ``create_payload`` (multipart/mixed),
    ``create_iov`` and ``get_revisions``; run twice, the second run creates nothing."""
    live, _, secret = server
    database = _testing_payloads(tmp_path / "localdb")
    admin = Basf2Client(live.url, _admin_user(secret))
    admin.create_globalTag("b2c_upload", "upload target", "bob")
    with pytest.raises(RequestError, match="Unauthorized"):  # writes need the token
        Basf2Client(live.url).create_payload("B2CBeam", str(database.parent / "dbstore_B2CBeam_rev_1.root"),
                                             hashlib.md5(b"beam one").hexdigest())
    with pytest.raises(RequestError, match="checksum"):  # bytes damaged on the way are refused
        admin.create_payload("B2CBeam", str(database.parent / "dbstore_B2CBeam_rev_1.root"), "0" * 32)
    assert _basf2_upload(admin, "b2c_upload", database) == (3, 3)
    assert _basf2_upload(admin, "b2c_upload", database) == (0, 0)  # resumable, like basf2's

    # what was stored is what the files hold, under basf2's payloadUrl/baseUrl
    listed = admin.get_all_iovs("b2c_upload")
    assert [(n, i) for n, _, _, i, *_ in listed] == [
        ("B2CBeam", (0, 0, 0, -1)), ("B2CBeam", (1, 0, -1, -1)), ("B2CGain", (0, 0, -1, -1))]
    for name, revision, checksum, iov, _pid, _iid, url, base in listed:
        data = requests.get(urllib.parse.urljoin(base, url), timeout=10).content
        assert hashlib.md5(data).hexdigest() == checksum
    assert admin.get_payloads("b2c_upload") == {(n, c): pid for n, _, c, _, pid, *_ in listed}
    assert admin.get_globalTagInfo("b2c_upload")["payloadCount"] == 3
    # the same through the native API: the token's name is the creator
    native = ConditionsClient(live.url, timeout=(2, 10))
    assert {(r.payload.name, r.iov) for r in native.iovs("b2c_upload")} == {
        ("B2CBeam", IoV(0, 0, 0, -1)), ("B2CBeam", IoV(1, 0, -1, -1)), ("B2CGain", IoV(0, 0, -1, -1))}
    assert {r.payload.creator for r in native.iovs("b2c_upload")} == {"admin-test"}


def test_iov_diff_and_dump_read_their_fields(server):
    """cli_main.py ``command_iov`` (with and without ``--run``, and ``--detail``),
    ``command_diff`` and ``command_dump`` (``-r`` and ``-i``), via ``get_all_iovs``."""
    live, _, secret = server
    native = ConditionsClient(live.url, token=secret, timeout=(2, 10))
    tag = "b2c_iov:v1+x"  # ':' and '+' are escaped by encode_name
    native.create_tag(tag)
    one = native.add_payload("B2CIov", b"iov one", filename="one.root")
    two = native.add_payload("B2CIov", b"iov two", filename="two.root")
    native.add_iov(tag, one.name, one.revision, IoV(0, 0, 0, -1))
    native.add_iov(tag, two.name, two.revision, IoV(1, 0, 1, 10))
    client = Basf2Client(live.url)

    everything = client.get_all_iovs(tag)
    assert [(n, r, i) for n, r, _, i, *_ in everything] == [
        ("B2CIov", one.revision, (0, 0, 0, -1)), ("B2CIov", two.revision, (1, 0, 1, 10))]
    at_run = client.get_all_iovs(tag, 1, 5)  # iovPayloads with the twice-escaped gtName
    assert [(n, r) for n, r, *_ in at_run] == [("B2CIov", two.revision)]
    # iov --run E R: cli_main.py passes the name unescaped in the query
    answer = client.request("GET", "/iovPayloads", params={"gtName": tag, "expNumber": 0, "runNumber": 3}).json()
    assert [item["payload"]["revision"] for item in answer] == [one.revision]
    # iov --detail reads these from both listings
    for item in client.request("GET", f"/globalTag/{encode_name(tag)}/globalTagPayloads").json() + answer:
        payload = item["payload" if "payload" in item else "payloadId"]
        for iov in ([item["payloadIov"]] if "payloadIov" in item else item["payloadIovs"]):
            for when in (iov["dtmIns"], iov["dtmMod"], payload["dtmIns"], payload["dtmMod"]):
                parse_date(when).astimezone(tz=None)
            assert iov["modifiedBy"] == "admin-test" and payload["modifiedBy"] == "admin-test"
            assert payload["baseUrl"] == live.url + "/files/"
    # diff: both tags' lists; print_globaltag for both first
    other = "b2c_iov_other"
    native.clone_tag(tag, other)
    native.add_iov(other, two.name, two.revision, IoV(2, 0, 2, -1))
    a, b = client.get_all_iovs(tag), client.get_all_iovs(other)
    assert {e[3] for e in b} - {e[3] for e in a} == {(2, 0, 2, -1)}
    # dump -r NAME REV: GET /module/{name}/payloads, pick the revision; dump -i ID: GET /payload/{id}
    revisions = client.request("GET", f"/module/{encode_name('B2CIov')}/payloads").json()
    chosen = [p for p in revisions if p["revision"] == two.revision][0]
    by_id = client.request("GET", f"/payload/{chosen['payloadId']}").json()
    assert by_id == chosen and by_id["checksum"] == hashlib.md5(b"iov two").hexdigest()
    url = urllib.parse.urljoin(by_id["baseUrl"] + "/", by_id["payloadUrl"])  # PayloadInformation.url
    assert requests.get(url, timeout=10).content == b"iov two"
    with pytest.raises(RequestError, match="Not Found"):
        client.request("GET", "/payload/999999")


def test_download_and_legacydownload(server, tmp_path):
    """cli_download.py ``command_download`` (``get_globalTagInfo``: ``globalTagId``,
    ``name``, ``globalTagStatus.name``; ``get_all_iovs``; ``download_payload``:
    ``urljoin(baseUrl, payloadUrl)`` into ``{checksum[:2]}/{name}_r{revision}.root``) and
    ``command_legacydownload`` (``urljoin(baseUrl + "/", payloadUrl)``, ``payloadIovs``)."""
    live, _, secret = server
    native = ConditionsClient(live.url, token=secret, timeout=(2, 10))
    native.create_tag("b2c_download")
    data = os.urandom(5000)
    p = native.add_payload("B2CDown", data, filename="weights.safetensors")
    native.add_iov("b2c_download", p.name, p.revision, IoV(0, 0, -1, -1))
    client = Basf2Client(live.url)
    info = client.get_globalTagInfo("b2c_download")
    assert (info["name"], info["globalTagStatus"]["name"]) == ("b2c_download", "OPEN")
    assert isinstance(info["globalTagId"], int)
    (name, revision, checksum, iov, _pid, _iid, url, base), = client.get_all_iovs("b2c_download")
    # urljoin without an added '/': baseUrl must end in '/' or its last segment is lost
    got = requests.get(urllib.parse.urljoin(base, url), timeout=10)
    assert got.status_code == 200 and hashlib.md5(got.content).hexdigest() == checksum
    local = tmp_path / checksum[:2] / f"{name}_r{revision}.root"
    local.parent.mkdir()
    local.write_bytes(got.content)
    assert local.read_bytes() == data
    for item in client.request("GET", "/globalTag/b2c_download/globalTagPayloads").json():
        payload = item["payloadId"]
        remote = urllib.parse.urljoin(payload["baseUrl"] + "/", payload["payloadUrl"])
        assert requests.get(remote, timeout=10).content == data
        assert [(i["expStart"], i["runStart"], i["expEnd"], i["runEnd"]) for i in item["payloadIovs"]] == [
            (0, 0, -1, -1)]
    # --tag-pattern: get_globalTags() names
    assert "b2c_download" in client.get_globalTags()


def test_check_payloads_is_bounded_and_validated(server):
    """``POST /checkPayloads`` is a read anyone may send: malformed or oversized bodies are
    4xx, never a 500."""
    live, _, _ = server
    client = Basf2Client(live.url)
    for body in (b"not json", b'{"name": "x"}', b'[{"name": 1}]'):
        answer = client.session.post(client.base + "v2/checkPayloads", data=body, timeout=10,
                                     headers={"Content-Type": "application/json"})
        assert answer.status_code == 422 and answer.json()["code"] == "validation_error"
    huge = [{"name": "X", "checksum": "0" * 32}] * 10_001
    assert client.session.post(client.base + "v2/checkPayloads", json=huge, timeout=30).status_code == 422
    answer = client.request("POST", "/checkPayloads", json=[{"name": "../etc", "checksum": "0" * 32}])
    assert answer.json() == []
