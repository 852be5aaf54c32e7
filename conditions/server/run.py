"""Running the service under uvicorn (used by ``conditionsdb serve`` and
``python -m conditions.server``)."""

from __future__ import annotations

import os

from . import app as app_module
from . import protocol
from .limits import Limits


def serve(db_url: str, *, payload_dir: str | None = None, host: str = "127.0.0.1", port: int = 8080,
          workers: int = 1, max_upload_bytes: int | None = None, public_url: str | None = None,
          metadata_max_age: int | None = None, log_level: str = "info", access_log: bool = False,
          limits: Limits = Limits()) -> None:
    """Serve the store at ``db_url`` until interrupted.

    Every worker process builds its own app and store from the environment (uvicorn's
    app factory), so ``workers > 1`` works for SQLite and PostgreSQL alike. The store is
    opened once here first, so a wrong URL fails at once with a clear message and schema
    migrations run before any worker starts. A missing or empty database is refused:
    serving never creates a store (``conditionsdb tag create`` or ``token create`` does).
    """
    import uvicorn

    from ..store import open_store

    open_store(db_url, payload_dir=payload_dir, create=False).close()
    os.environ[app_module.ENV_DB] = str(db_url)
    for name, value in ((app_module.ENV_PAYLOADS, payload_dir), (app_module.ENV_MAX_UPLOAD, max_upload_bytes),
                        (app_module.ENV_PUBLIC_URL, public_url), (app_module.ENV_MAX_AGE, metadata_max_age),
                        (app_module.ENV_MAX_JSON, limits.max_json_bytes),
                        (app_module.ENV_BODY_TIMEOUT, limits.body_timeout),
                        (protocol.ENV_HEADER_TIMEOUT, limits.header_timeout),
                        (protocol.ENV_MAX_HEADER_BYTES, limits.max_header_bytes),
                        (protocol.ENV_MAX_CONNECTIONS, limits.max_connections)):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = str(value)
    _raise_open_files_limit(limits.max_connections + 256)
    # Worker processes read the limits from the environment when they import the
    # protocol; a single worker runs here, in this process.
    http = protocol.LimitedHttpToolsProtocol.load_limits()
    uvicorn.run("conditions.server.app:app_from_environment", factory=True, host=host, port=port,
                workers=max(1, workers), log_level=log_level, access_log=access_log,
                server_header=False, proxy_headers=True, http=http,
                limit_concurrency=limits.limit_concurrency, timeout_keep_alive=limits.timeout_keep_alive,
                backlog=limits.backlog, timeout_graceful_shutdown=30)


def _raise_open_files_limit(wanted: int) -> None:
    """Every connection is a file descriptor: raise the soft limit towards ``wanted`` (as
    far as the hard limit allows), so the connection limit, not EMFILE, decides."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main(argv: list[str] | None = None) -> None:
    """``python -m conditions.server --db URL [...]``: the same as ``conditionsdb serve``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m conditions.server", description=serve.__doc__)
    parser.add_argument("--db", required=True, help="store URL: sqlite:///PATH, PATH or postgresql://...")
    parser.add_argument("--payloads", default=None, help="payload directory (default: the store's own)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-upload-bytes", type=int, default=None)
    parser.add_argument("--public-url", default=None)
    parser.add_argument("--max-age", type=int, default=None, help="Cache-Control max-age of metadata answers")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--access-log", action="store_true")
    defaults = Limits()
    for name in Limits.__dataclass_fields__:
        default = getattr(defaults, name)
        kind = type(default) if default is not None else int
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=default)
    args = parser.parse_args(argv)
    limits = Limits(**{name: getattr(args, name) for name in Limits.__dataclass_fields__})
    serve(args.db, payload_dir=args.payloads, host=args.host, port=args.port, workers=args.workers,
          max_upload_bytes=args.max_upload_bytes, public_url=args.public_url,
          metadata_max_age=args.max_age, log_level=args.log_level, access_log=args.access_log,
          limits=limits)
