"""ConditionsClient: the Store interface over the native REST API.

The registry and the CLI use it exactly like a local SQLite or PostgreSQL store::

    client = ConditionsClient(["https://conditions.example/", "https://mirror.example/"],
                              token=os.environ.get("CONDITIONSDB_TOKEN"),
                              cache=PayloadCache())
    found = client.resolve(["PXDBackgroundGenerator"], "PXDBackgroundGenerator_gan", 1003, 42)
    path = client.get_file(found.payload)   # streamed into the cache, verified

Server errors come back as the same typed exceptions a local store raises (the JSON
error body's ``code`` names the class). ``user=`` arguments are ignored: the server
records the name of the token as the author of every change.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, BinaryIO, Sequence
from urllib.parse import quote

import requests

from ..exceptions import (AllServersFailedError, AuthenticationError, ConditionsError, OfflineError,
                          ServerError)
from ..iov import IntervalOfValidity
from ..payload import IoVRecord, PayloadInfo, ResolvedPayload, hash_stream
from ..server import wire
from ..store.base import AuditEntry, GlobalTagInfo, Store, TagDiff, TokenInfo
from ..tags import GlobalTagState
from .transport import BadAnswer, Transport

API = "/api/v1"
#: Items per page of a listing.
LIST_PAGE = 5000


def _q(segment: str) -> str:
    """One URL path segment, fully escaped (names never change the path's shape)."""
    return quote(str(segment), safe="")


def raise_for_error(response: requests.Response) -> None:
    """Turn an error answer into the typed exception the server named (ServerError otherwise)."""
    if response.status_code < 400:
        return
    code = message = None
    try:
        body = response.json()
        if isinstance(body, dict):
            code, message = body.get("code"), body.get("message")
    except ValueError:
        pass
    message = str(message or f"HTTP {response.status_code} {response.reason} from {response.url}")
    cls = wire.error_class_for_code(code)
    if cls is None or cls in (ServerError, AllServersFailedError):
        raise ServerError(message, status=response.status_code, reason=response.reason)
    raise cls(message)


def _json(response: requests.Response) -> Any:
    raise_for_error(response)
    if response.status_code == 204:
        return None
    try:
        return response.json()
    except ValueError as error:
        raise BadAnswer(f"malformed JSON in the answer ({error})") from None


class ConditionsClient(Store):
    """A conditions store reached over HTTP(S), with retries, failover and a payload cache.

    ``servers``: one URL, a list, or a comma/space separated string, tried in order.
    ``timeout``: (connect, read) seconds per attempt; ``retries``: attempts per server
    for connection errors, timeouts, 429 and 5xx (exponential backoff with jitter);
    ``total_timeout``: bound on everything one call does; ``cache``: the PayloadCache
    that :meth:`get_file` fills; ``offline``: never touch the network (OfflineError).
    """

    def __init__(self, servers: str | Sequence[str], *, token: str | None = None,
                 timeout: float | tuple[float, float] = (3.05, 30.0), retries: int = 3,
                 backoff_factor: float = 0.25, total_timeout: float = 120.0, cache: Any = None,
                 offline: bool = False):
        self.transport = Transport(servers, token=token, timeout=timeout, retries=retries,
                                   backoff_factor=backoff_factor, total_timeout=total_timeout,
                                   offline=offline)
        self.cache = cache
        self.offline = offline
        self.description = self.transport.description

    def __repr__(self) -> str:
        return f"ConditionsClient({self.description!r}, offline={self.offline})"

    @property
    def base_url(self) -> str:
        """basf2's ``baseUrl`` for this server's payloads: ``joinWithSlash(base_url,
        payload.url)`` downloads one (the server's ``/files/`` tree). A snapshot written
        from this client records it, so its payloads can be fetched again."""
        return self.transport.servers[0] + "/files/"

    # -- plumbing -------------------------------------------------------------------------
    def _get(self, path: str, params: Any = None) -> Any:
        return self.transport.call("GET", API + path, _json, params=params)

    def _get_all(self, path: str, params: dict[str, Any] | None = None) -> list[Any]:
        """A listing, fetched page by page (``Link: rel="next"``), so that no answer of a
        server is larger than a page. A server that does not page answers everything at
        once and that is taken as it is."""
        def page(response: requests.Response) -> tuple[Any, str | None]:
            return _json(response), response.links.get("next", {}).get("url")

        items, following = self.transport.call("GET", API + path, page,
                                               params={**(params or {}), "limit": LIST_PAGE})
        items = list(items)
        while following and len(items) % LIST_PAGE == 0:
            more, following = self.transport.call("GET", following, page)
            items.extend(more)
        return items

    def _write(self, method: str, path: str, *, json: Any = None, params: Any = None,
               data: Any = None, idempotent: bool | None = None, token: str | None = None) -> Any:
        return self.transport.call(method, API + path, _json, json=json, params=params, data=data,
                                   auth=True, idempotent=idempotent, token=token,
                                   headers={"Content-Type": "application/octet-stream"} if data is not None else None)

    def close(self) -> None:
        self.transport.close()

    def health(self) -> dict[str, Any]:
        return self._get("/health")

    def whoami(self) -> TokenInfo:
        return wire.token_from_json(self._write("GET", "/whoami"))

    # -- read interface -------------------------------------------------------------------
    def tag_state(self, tag: str) -> GlobalTagState:
        return self.get_tag(tag).state

    def resolve(self, tags: Sequence[str] | str, name: str, exp: int, run: int, *,
                allow_open: bool = False) -> ResolvedPayload:
        tag_list = [tags] if isinstance(tags, str) else list(tags)
        params = [("tag", t) for t in tag_list] + [("name", name), ("exp", exp), ("run", run),
                                                     ("allow_open", "true" if allow_open else "false")]
        return wire.resolved_from_json(self._get("/resolve", params), source=self.description)

    def iovs(self, tag: str, *, name: str | None = None, exp: int | None = None,
             run: int | None = None) -> list[IoVRecord]:
        params = {k: v for k, v in (("payload", name), ("exp", exp), ("run", run)) if v is not None}
        return [wire.iov_record_from_json(r) for r in self._get_all(f"/tags/{_q(tag)}/iovs", params)]

    def fetch_payload(self, payload: PayloadInfo, destination: Path) -> None:
        """Stream the payload's bytes into ``destination``, trying each server until one
        delivers complete bytes matching the metadata (size, MD5, SHA-256)."""
        if self.offline:
            raise OfflineError(f"offline mode: not downloading payload {payload.name} r{payload.revision}")
        path = f"{API}/payloads/{_q(payload.name)}/{int(payload.revision)}/data"
        self.transport.download(path, Path(destination), raise_for_error, size=payload.size,
                                md5=payload.checksum, sha256=payload.sha256)

    def get_file(self, payload: PayloadInfo) -> Path:
        """A verified local file with the payload's bytes, downloaded into the cache once."""
        if self.cache is None:
            from ..cache import PayloadCache

            self.cache = PayloadCache(offline=self.offline)
        return self.cache.get(payload, self)

    # -- tags -------------------------------------------------------------------------------
    def list_tags(self, *, state: GlobalTagState | str | None = None,
                  pattern: str | None = None) -> list[GlobalTagInfo]:
        params = {}
        if state is not None:
            params["state"] = GlobalTagState.parse(state).value
        if pattern is not None:
            params["pattern"] = pattern
        return [wire.tag_from_json(t) for t in self._get("/tags", params)]

    def get_tag(self, name: str) -> GlobalTagInfo:
        return wire.tag_from_json(self._get(f"/tags/{_q(name)}"))

    def create_tag(self, name: str, description: str = "", *, user: str | None = None) -> GlobalTagInfo:
        return wire.tag_from_json(self._write("POST", "/tags", json={"name": name, "description": description}))

    def modify_tag(self, name: str, *, description: str, user: str | None = None) -> GlobalTagInfo:
        return wire.tag_from_json(self._write("PATCH", f"/tags/{_q(name)}", json={"description": description},
                                              idempotent=True))

    def clone_tag(self, source: str, destination: str, *, description: str | None = None,
                  user: str | None = None) -> GlobalTagInfo:
        return wire.tag_from_json(self._write("POST", f"/tags/{_q(source)}/clone",
                                              json={"destination": destination, "description": description}))

    def set_tag_state(self, name: str, state: GlobalTagState | str, *, user: str | None = None) -> GlobalTagInfo:
        state = GlobalTagState.parse(state)
        return wire.tag_from_json(self._write("PUT", f"/tags/{_q(name)}/state", json={"state": state.value},
                                              idempotent=False))

    # -- payloads -----------------------------------------------------------------------------
    def add_payload(self, name: str, data: str | Path | BinaryIO | bytes, *, metadata: dict[str, Any] | None = None,
                    user: str | None = None, filename: str | None = None) -> PayloadInfo:
        """Upload bytes (streamed from a file) as payload ``name``. The server checks the
        SHA-256 computed here, so a body damaged on the way is refused, not stored."""
        import json as _json_mod

        if isinstance(data, (bytes, bytearray, memoryview)):
            stream: BinaryIO = io.BytesIO(bytes(data))
        elif isinstance(data, (str, Path)):
            filename = filename or Path(data).name
            stream = open(data, "rb")
        else:
            stream = data
            filename = filename or (Path(data.name).name if isinstance(getattr(data, "name", None), str) else None)
        try:
            hashes = hash_stream(stream)
            stream.seek(0)
            params = {"sha256": hashes.sha256}
            if metadata:
                params["metadata"] = _json_mod.dumps(metadata)
            if filename:
                params["filename"] = filename
            # Same bytes under the same name give the same revision: safe to repeat.
            answer = self._write("POST", f"/payloads/{_q(name)}", params=params, data=stream, idempotent=True)
        finally:
            if isinstance(data, (str, Path)):
                stream.close()
        return wire.payload_from_json(answer)

    def get_payload(self, name: str, revision: int | None = None) -> PayloadInfo:
        path = f"/payloads/{_q(name)}" if revision is None else f"/payloads/{_q(name)}/{int(revision)}"
        return wire.payload_from_json(self._get(path))

    def list_payloads(self, name: str | None = None) -> list[PayloadInfo]:
        return [wire.payload_from_json(p) for p in self._get_all("/payloads", {"name": name} if name else None)]

    # -- IoVs -----------------------------------------------------------------------------------
    def add_iov(self, tag: str, name: str, revision: int, iov: IntervalOfValidity, *,
                user: str | None = None) -> IoVRecord:
        body = {"payload": name, "revision": int(revision), "iov": wire.iov_to_json(iov)}
        return wire.iov_record_from_json(self._write("POST", f"/tags/{_q(tag)}/iovs", json=body))

    def modify_iov(self, iov_id: int, iov: IntervalOfValidity, *, user: str | None = None) -> IoVRecord:
        return wire.iov_record_from_json(self._write("PATCH", f"/iovs/{int(iov_id)}",
                                                     json={"iov": wire.iov_to_json(iov)}, idempotent=True))

    def delete_iov(self, iov_id: int, *, user: str | None = None) -> IoVRecord:
        return wire.iov_record_from_json(self._write("DELETE", f"/iovs/{int(iov_id)}", idempotent=False))

    def diff(self, tag_a: str, tag_b: str, *, exp: int | None = None, run: int | None = None) -> TagDiff:
        params = {"tag_a": tag_a, "tag_b": tag_b}
        params.update({k: v for k, v in (("exp", exp), ("run", run)) if v is not None})
        return wire.diff_from_json(self._get("/diff", params))

    # -- audit and tokens ------------------------------------------------------------------------
    def audit(self, *, tag: str | None = None, limit: int = 100, who: str | None = None) -> list[AuditEntry]:
        params: dict[str, Any] = {"limit": limit}
        if tag is not None:
            params["tag"] = tag
        if who is not None:
            params["user"] = who
        return [wire.audit_from_json(e) for e in self._get("/audit", params)]

    def create_token(self, name: str, scopes: Sequence[str], *, user: str | None = None) -> tuple[TokenInfo, str]:
        answer = self._write("POST", "/tokens", json={"name": name, "scopes": list(scopes)})
        return wire.token_from_json(answer["token"]), answer["secret"]

    def list_tokens(self) -> list[TokenInfo]:
        return [wire.token_from_json(t) for t in self._write("GET", "/tokens")]

    def revoke_token(self, token_id: int, *, user: str | None = None) -> TokenInfo:
        return wire.token_from_json(self._write("DELETE", f"/tokens/{int(token_id)}", idempotent=False))

    def authenticate(self, secret: str) -> TokenInfo | None:
        """The token behind ``secret`` as the server sees it, or None if it is not valid."""
        try:
            return wire.token_from_json(self._write("GET", "/whoami", token=secret))
        except AuthenticationError:
            return None


def client_from_environment(url: str, **options: Any) -> ConditionsClient:
    """A client for ``url`` using ``CONDITIONSDB_TOKEN`` from the environment if set."""
    options.setdefault("token", os.environ.get("CONDITIONSDB_TOKEN") or None)
    return ConditionsClient(url, **options)


__all__ = ["ConditionsClient", "ConditionsError", "client_from_environment", "raise_for_error"]
