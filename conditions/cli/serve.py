"""``conditionsdb serve``: run the REST service (FastAPI under uvicorn) for a store."""

from __future__ import annotations

import click

from ..server.limits import DEFAULT_LIMITS as _LIMITS
from .context import CliContext, pass_cli


@click.command(short_help="Run the REST server (FastAPI under uvicorn) for a store.")
@click.option("--db", "db", metavar="URL", default=None,
              help="The store to serve (default: the global --db / CONDITIONSDB_URL).")
@click.option("--payloads", "payloads", metavar="DIR", default=None,
              help="Payload directory (default: the store's own, as for every other command).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes (each opens its own store connection pool).")
@click.option("--max-upload-bytes", default=2 * 1024**3, show_default=True, type=click.IntRange(1),
              help="Uploads beyond this size are refused (413).")
@click.option("--public-url", default=None, metavar="URL",
              help="Base URL clients reach this server under (for basf2's baseUrl behind a proxy).")
@click.option("--max-age", default=60, show_default=True, type=click.IntRange(0),
              help="Cache-Control max-age (s) of metadata answers, for HTTP proxies.")
@click.option("--max-json-bytes", default=_LIMITS.max_json_bytes, show_default=True, type=click.IntRange(1),
              help="Cap of every other request body (413 beyond); checked after the token, before reading.")
@click.option("--limit-concurrency", default=_LIMITS.limit_concurrency, show_default=True, type=click.IntRange(1),
              help="Requests processed at once per worker; more are answered 503.")
@click.option("--max-connections", default=_LIMITS.max_connections, show_default=True, type=click.IntRange(1),
              help="Open connections per worker; one more is answered 503 and closed at once.")
@click.option("--timeout-keep-alive", default=_LIMITS.timeout_keep_alive, show_default=True,
              type=click.IntRange(1), help="Seconds an idle keep-alive connection stays open.")
@click.option("--header-timeout", default=_LIMITS.header_timeout, show_default=True,
              type=click.FloatRange(0.1), help="Seconds a client has to send its request headers (408 after).")
@click.option("--max-header-bytes", default=_LIMITS.max_header_bytes, show_default=True,
              type=click.IntRange(1024), help="Size limit of request line plus headers (431 beyond).")
@click.option("--body-timeout", default=_LIMITS.body_timeout, show_default=True, type=click.FloatRange(0.1),
              help="Seconds a request body may stall (408 after).")
@click.option("--backlog", default=_LIMITS.backlog, show_default=True, type=click.IntRange(1),
              help="Connections the kernel queues before the server accepts them.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@pass_cli
def serve(cli: CliContext, db, payloads, host, port, workers, max_upload_bytes, public_url, max_age,
          max_json_bytes, limit_concurrency, max_connections, timeout_keep_alive, header_timeout,
          max_header_bytes, body_timeout, backlog, log_level, access_log):
    """Serve the store over HTTP: the native API under /api/v1 (OpenAPI at
    /api/v1/openapi.json, docs at /api/v1/docs), basf2's read endpoints under /v2, and
    read-only web pages under /ui/ (global tags, IoV timelines, payloads, diffs, history).

    Reads are anonymous; writes need a token from `conditionsdb token create`. The store
    must exist (serving never creates one). For production, run several workers behind a
    reverse proxy or HTTP cache (README: "Running the server in production")."""
    from ..server.limits import Limits
    from ..server.run import serve as run_server

    url = db or cli.db
    if not url:
        raise click.UsageError("no store given: pass --db URL (or the global --db / CONDITIONSDB_URL)")
    if url.lower().startswith(("http://", "https://")):
        raise click.UsageError("serve needs a database (sqlite or postgresql), not another server")
    run_server(url, payload_dir=payloads or cli.payload_dir, host=host, port=port, workers=workers,
               max_upload_bytes=max_upload_bytes, public_url=public_url, metadata_max_age=max_age,
               log_level=log_level, access_log=access_log,
               limits=Limits(limit_concurrency=limit_concurrency, max_connections=max_connections,
                             timeout_keep_alive=timeout_keep_alive, header_timeout=header_timeout,
                             max_header_bytes=max_header_bytes, body_timeout=body_timeout,
                             max_json_bytes=max_json_bytes, backlog=backlog))
