"""basf2's central metadata provider, step by step, against a real server.

This mirrors what basf2 (framework/database: CentralMetadataProvider, Downloader,
PayloadProvider) does, so the server can be used by basf2 jobs unchanged:

* ``joinWithSlash(base, rest)``: strip trailing '/' from base and leading '/' from rest,
  join with exactly one '/';
* ``GET /v2/globalTagStatus``: every entry's ``name``;
* ``GET /v2/globalTag/<curl-escaped name>``: ``globalTagStatus.name``;
* ``GET v2/iovPayloads/?gtName=<escaped>&expNumber=E&runNumber=R``: an array; per item
  ``payload.{basf2Module.name, payloadUrl, baseUrl, checksum, revision}`` and
  ``payloadIov.{expStart, runStart, expEnd, runEnd}``; of duplicate names the highest
  revision is kept;
* the payload is downloaded from ``joinWithSlash(baseUrl, payloadUrl)`` and accepted only
  if its MD5 equals ``checksum``.
Requests carry ``Accept: application/json``, as basf2's curl session does.
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote

import requests

from conditions.client import ConditionsClient
from conditions.iov import IntervalOfValidity as IoV


def join_with_slash(base: str, rest: str) -> str:
    return base.rstrip("/") + "/" + rest.lstrip("/")


def curl_escape(text: str) -> str:
    # curl_easy_escape percent-encodes everything except the RFC 3986 unreserved set.
    return quote(text, safe="-._~")


def basf2_get(base_url: str, path: str):
    answer = requests.get(join_with_slash(base_url, path), headers={"Accept": "application/json"}, timeout=5)
    answer.raise_for_status()  # CURLOPT_FAILONERROR
    return answer.json()


def basf2_payloads(base_url: str, globaltag: str, exp: int, run: int) -> dict[str, dict]:
    url = ("v2/iovPayloads/?gtName=" + curl_escape(globaltag) + "&expNumber=" + str(exp)
           + "&runNumber=" + str(run))
    payloads = basf2_get(base_url, url)
    assert isinstance(payloads, list)
    kept: dict[str, dict] = {}
    for info in payloads:
        payload, iov = info["payload"], info["payloadIov"]
        entry = {
            "name": payload["basf2Module"]["name"], "payloadUrl": payload["payloadUrl"],
            "baseUrl": payload["baseUrl"], "checksum": payload["checksum"], "revision": payload["revision"],
            "iov": (iov["expStart"], iov["runStart"], iov["expEnd"], iov["runEnd"]),
        }
        if entry["name"] not in kept or kept[entry["name"]]["revision"] < entry["revision"]:
            kept[entry["name"]] = entry
    return kept


def test_basf2_central_metadata_provider(live_server):
    server, _location, admin_secret = live_server
    admin = ConditionsClient(server.url, token=admin_secret, timeout=(2, 10))
    tag = "pxd_bg:release-08+mc"  # characters that curl escapes
    admin.create_tag(tag, "basf2 compatibility")
    old = admin.add_payload("PXDBackgroundGenerator_gan", b"old weights", filename="gan.root")
    new = admin.add_payload("PXDBackgroundGenerator_gan", b"new weights", filename="gan.root")
    beam = admin.add_payload("BeamParameters", b"beam", filename="beam.root")
    admin.add_iov(tag, old.name, old.revision, IoV(0, 0, -1, -1))
    admin.add_iov(tag, new.name, new.revision, IoV(1003, 0, 1003, -1))
    admin.add_iov(tag, beam.name, beam.revision, IoV(1003, 10, 1003, 20))
    admin.set_tag_state(tag, "TESTING")

    base = server.url + "/"  # basf2 users often write the server with a trailing slash
    states = {entry["name"] for entry in basf2_get(base, "/v2/globalTagStatus")}
    assert {"TESTING", "VALIDATED", "PUBLISHED", "RUNNING"} <= states

    info = basf2_get(base, "/v2/globalTag/" + curl_escape(tag))
    # Metadata may change (states, new IoVs): proxies keep it only briefly.
    answer = requests.get(join_with_slash(base, "/v2/globalTag/" + curl_escape(tag)), timeout=5)
    assert answer.headers["Cache-Control"] == "public, max-age=60"
    assert info["globalTagStatus"]["name"] == "TESTING"
    assert info["name"] == tag and isinstance(info["globalTagId"], int)
    assert "name" in info["globalTagType"] and info["description"] == "basf2 compatibility"

    found = basf2_payloads(base, tag, 1003, 15)
    assert set(found) == {"PXDBackgroundGenerator_gan", "BeamParameters"}
    gan = found["PXDBackgroundGenerator_gan"]
    assert (gan["revision"], gan["iov"]) == (new.revision, (1003, 0, 1003, -1))
    assert found["BeamParameters"]["iov"] == (1003, 10, 1003, 20)
    for entry, data in ((gan, b"new weights"), (found["BeamParameters"], b"beam")):
        assert entry["payloadUrl"] == f"{entry['checksum'][:2]}/{entry['name']}_r{entry['revision']}.root"
        download = requests.get(join_with_slash(entry["baseUrl"], entry["payloadUrl"]), timeout=5)
        download.raise_for_status()
        assert hashlib.md5(download.content).hexdigest() == entry["checksum"]
        assert download.content == data
        # Squid/Frontier-style proxies: immutable bytes, content-hash ETag, HEAD and Range.
        assert download.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert download.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
        url = join_with_slash(entry["baseUrl"], entry["payloadUrl"])
        head = requests.head(url, timeout=5)
        assert head.status_code == 200 and head.content == b"" and head.headers["Content-Length"] == str(len(data))
        part = requests.get(url, headers={"Range": "bytes=1-3"}, timeout=5)
        assert part.status_code == 206 and part.content == data[1:4]

    assert set(basf2_payloads(base, tag, 5, 5)) == {"PXDBackgroundGenerator_gan"}
    # An unknown tag: basf2 only needs a failing status to warn and move on.
    missing = requests.get(join_with_slash(base, "/v2/globalTag/nope"), timeout=5)
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_tag"
