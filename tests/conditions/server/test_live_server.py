"""Full round trips through ConditionsClient against a real uvicorn server on loopback,
backed by a SQLite file and by a PostgreSQL database (the ``store_url`` fixture)."""

from __future__ import annotations

import hashlib

import pytest
import requests

from conditions.cache import PayloadCache
from conditions.client import ConditionsClient
from conditions.exceptions import (AuthenticationError, FrozenTagError, NoPayloadFoundError,
                                   PayloadTooLargeError, PermissionDeniedError, TagExistsError,
                                   TagStateError, UnknownTagError, UnusableTagError)
from conditions.iov import IntervalOfValidity as IoV
from conditions.tags import GlobalTagState


def test_round_trip_through_the_client(live_server, tmp_path):
    server, location, admin_secret = live_server
    cache = PayloadCache(tmp_path / "cache")
    admin = ConditionsClient(server.url, token=admin_secret, cache=cache, timeout=(2, 10))
    anonymous = ConditionsClient(server.url, cache=cache, timeout=(2, 10))

    admin.create_tag("PXD_bg", "run-dependent background")
    with pytest.raises(TagExistsError):
        admin.create_tag("PXD_bg")
    data_1, data_2 = b"first checkpoint" * 100, b"second checkpoint" * 100
    p1 = admin.add_payload("PXDBackgroundGenerator_gan", data_1, metadata={"steps": 10}, filename="gan.safetensors")
    assert (p1.revision, p1.size, p1.checksum) == (1, len(data_1), hashlib.md5(data_1).hexdigest())
    assert p1.url.endswith("PXDBackgroundGenerator_gan_r1.safetensors") and p1.metadata["steps"] == 10
    assert admin.add_payload("PXDBackgroundGenerator_gan", data_1).revision == 1  # same bytes, same revision
    p2 = admin.add_payload("PXDBackgroundGenerator_gan", data_2)
    assert p2.revision == 2

    admin.add_iov("PXD_bg", p1.name, 1, IoV(0, 0, 0, -1))
    late = admin.add_iov("PXD_bg", p2.name, 2, IoV(1, 0, -1, -1))

    # OPEN tags are usable only on request.
    with pytest.raises(UnusableTagError):
        anonymous.resolve("PXD_bg", p1.name, 0, 5)
    assert anonymous.resolve("PXD_bg", p1.name, 0, 5, allow_open=True).payload.revision == 1

    admin.set_tag_state("PXD_bg", "TESTING")
    with pytest.raises(TagStateError):
        admin.set_tag_state("PXD_bg", "RUNNING")
    assert anonymous.tag_state("PXD_bg") is GlobalTagState.TESTING
    found = anonymous.resolve(["PXD_bg"], p1.name, 3, 7)
    assert (found.payload.revision, found.iov, found.tag) == (2, IoV(1, 0, -1, -1), "PXD_bg")
    assert found.iov_id == late.iov_id
    with pytest.raises(FrozenTagError):
        admin.add_iov("PXD_bg", p1.name, 1, IoV(5, 0, 5, -1))
    with pytest.raises(UnknownTagError) as unknown:
        anonymous.resolve(["no_such_tag"], p1.name, 0, 0)
    # Messages do not tell anonymous callers where the server keeps its database.
    hidden = location.url.rsplit("/", 1)[-1] if location.backend == "postgresql" else location.url
    assert hidden not in str(unknown.value) and "server's conditions database" in str(unknown.value)
    with pytest.raises(NoPayloadFoundError):
        anonymous.resolve("PXD_bg", "SomethingElse", 0, 0)

    # Downloads go through the verified cache.
    path = anonymous.get_file(found.payload)
    assert path.read_bytes() == data_2 and path.is_relative_to(tmp_path / "cache")
    assert [r.payload.revision for r in anonymous.iovs("PXD_bg", exp=0, run=3)] == [1]

    # Clone, edit the clone, diff, delete.
    admin.clone_tag("PXD_bg", "PXD_bg_v2", description="next")
    moved = admin.iovs("PXD_bg_v2", name=p1.name, exp=0, run=0)[0]
    admin.modify_iov(moved.iov_id, IoV(0, 0, 0, 99))
    difference = anonymous.diff("PXD_bg", "PXD_bg_v2")
    assert [r.iov for r in difference.only_b] == [IoV(0, 0, 0, 99)]
    admin.delete_iov(moved.iov_id)
    assert len(admin.iovs("PXD_bg_v2")) == 1

    # The audit log says who did what.
    entries = anonymous.audit(tag="PXD_bg", limit=50) + [e for e in anonymous.audit(limit=200)
                                                         if e.action == "payload.add" and e.details.get("name") == p1.name]
    actions = {e.action for e in entries}
    assert {"tag.create", "tag.state", "payload.add", "iov.add"} <= actions
    assert {e.who for e in entries} == {"admin-test"}
    assert all(e.tag == "PXD_bg" for e in anonymous.audit(tag="PXD_bg"))

    # Uploads over the server's cap (64 KiB here) are refused.
    with pytest.raises(PayloadTooLargeError):
        admin.add_payload("Huge", b"x" * 70_000)
    assert [t.name for t in anonymous.list_tags(pattern="PXD_bg*")] == ["PXD_bg", "PXD_bg_v2"]


def test_tokens_and_scopes(live_server):
    server, _location, admin_secret = live_server
    admin = ConditionsClient(server.url, token=admin_secret, timeout=(2, 10))
    admin.create_tag("calib_A")
    admin.create_tag("other")
    payload = admin.add_payload("Calib", b"constants")
    info, secret = admin.create_token("calibrator", ["iov:calib_*"])
    assert secret not in repr(admin.list_tokens())
    scoped = ConditionsClient(server.url, token=secret, timeout=(2, 10))
    assert scoped.whoami().name == "calibrator"

    scoped.add_iov("calib_A", "Calib", payload.revision, IoV(0, 0, -1, -1))
    assert scoped.add_payload("Calib", b"constants v2").revision == 2
    with pytest.raises(PermissionDeniedError):
        scoped.add_iov("other", "Calib", payload.revision, IoV(0, 0, -1, -1))
    with pytest.raises(PermissionDeniedError):
        scoped.create_tag("calib_B")
    with pytest.raises(PermissionDeniedError):
        scoped.set_tag_state("calib_A", "TESTING")
    with pytest.raises(AuthenticationError):
        ConditionsClient(server.url, timeout=(2, 10)).create_tag("anonymous")
    with pytest.raises(AuthenticationError):
        ConditionsClient(server.url, token="not-a-token", timeout=(2, 10)).create_tag("guess")

    admin.revoke_token(info.token_id)
    with pytest.raises(AuthenticationError):
        scoped.add_iov("calib_A", "Calib", payload.revision, IoV(1, 0, -1, -1))
    assert admin.authenticate(secret) is None

    # The raw answers: status and the JSON error body.
    answer = requests.post(server.url + "/api/v1/tags", json={"name": "x"}, timeout=5)
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
    assert answer.json()["code"] == "unauthenticated"


def test_download_headers_for_proxies(live_server):
    server, _location, admin_secret = live_server
    admin = ConditionsClient(server.url, token=admin_secret, timeout=(2, 10))
    data = bytes(range(256)) * 8
    payload = admin.add_payload("Blob", data)
    url = f"{server.url}/api/v1/payloads/Blob/{payload.revision}/data"

    full = requests.get(url, timeout=5)
    assert full.content == data
    assert full.headers["ETag"] == f'"{payload.sha256}"'
    assert full.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    head = requests.head(url, timeout=5)
    assert head.status_code == 200 and head.content == b"" and head.headers["Content-Length"] == str(len(data))
    part = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=5)
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    tail = requests.get(url, headers={"Range": "bytes=-5"}, timeout=5)
    assert tail.status_code == 206 and tail.content == data[-5:]
    beyond = requests.get(url, headers={"Range": f"bytes={len(data)}-"}, timeout=5)
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{len(data)}"
    again = requests.get(url, headers={"If-None-Match": full.headers["ETag"]}, timeout=5)
    assert again.status_code == 304 and again.content == b""

    meta = requests.get(f"{server.url}/api/v1/tags", timeout=5)
    assert meta.headers["Cache-Control"] == "public, max-age=60"


ODD_REQUESTS = [
    ("GET", "/api/v1/tags/%00"),
    ("GET", "/api/v1/tags/a%00b/iovs"),
    ("GET", "/api/v1/resolve?tag=%00&name=X&exp=0&run=0"),
    ("GET", "/api/v1/resolve?tag=gt&name=%00&exp=0&run=0"),
    ("GET", "/api/v1/resolve?tag=gt&name=X&exp=99999999999999999999&run=0"),
    ("GET", "/api/v1/payloads/%F0%9F%92%A5/1"),
    ("GET", "/api/v1/payloads/X/0/data"),
    ("GET", "/api/v1/diff?tag_a=%00&tag_b=x"),
    ("GET", "/api/v1/audit?tag=%00"),
    ("GET", "/v2/iovPayloads/?gtName=%00&expNumber=0&runNumber=0"),
    ("GET", "/v2/globalTag/%E2%80%AE"),
    ("GET", "/files/00/..%2F..%2Fetc_r1.root"),
    ("POST", "/api/v1/tags"),
    ("GET", "/api/v1/iovs/99999999999999999999"),
]


def test_odd_input_never_causes_a_server_error(live_server):
    server, _location, admin_secret = live_server
    for method, path in ODD_REQUESTS:
        answer = requests.request(method, server.url + path, headers={"Authorization": f"Bearer {admin_secret}"},
                                  data=b"\x00\xff", timeout=5)
        assert 400 <= answer.status_code < 500, (path, answer.text)
        assert set(answer.json()) >= {"code", "reason", "message"}
