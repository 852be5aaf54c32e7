"""Schema fuzzing: schemathesis generates requests for every operation of the OpenAPI
schema (sent with an admin token, so writes are exercised too) against the app on a
real SQLite store; no request may cause a 500. A few examples per operation keep the
run short."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from conditions.iov import IntervalOfValidity as IoV
from conditions.server import create_app
from conditions.store import open_store

EXAMPLES_PER_OPERATION = 8


def test_generated_requests_never_cause_a_server_error(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'fuzz.db'}", tmp_path / "payloads")
    try:
        store.create_token("revocable", ["iov:*"])  # id 1: the fuzzer may revoke it, not itself
        _, secret = store.create_token("fuzzer", ["admin"])
        # Some real content, so generated requests sometimes hit something.
        store.create_tag("gt", "fuzz target")
        payload = store.add_payload("Foo", b"bytes")
        store.add_iov("gt", "Foo", payload.revision, IoV(0, 0, -1, -1))
        schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", create_app(store, max_upload_bytes=4096))
        headers = {"Authorization": f"Bearer {secret}"}
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 20

        for operation in operations:
            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy())
            def fuzz(case):
                case.call_and_validate(headers=headers, checks=[not_a_server_error])

            fuzz()
    finally:
        store.close()
