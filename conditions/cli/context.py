"""What every ``conditionsdb`` command shares: the lazily opened store, the API token,
output in text or JSON, tables, progress bars, click parameter types for IoVs and tag
states, and turning typed conditions errors into a message and an exit status.

A command module uses it like this::

    from .context import CliContext, pass_cli

    @click.command()
    @pass_cli
    def mycommand(cli: CliContext):
        cli.emit({"answer": 42}, "the answer is 42")

Exit statuses: 0 success, 1 a failure at run time (the store refused, a file is damaged,
the server said no), 2 a usage error (click's own, plus malformed IoVs, unknown states and
bad ``key=value`` items, which the parameter types below turn into usage errors).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import traceback
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import click

from ..exceptions import ConditionsError, InvalidIoVError, NotAStoreError, ReadOnlyStoreError, TagStateError
from ..iov import IntervalOfValidity
from ..tags import GlobalTagState

log = logging.getLogger("conditions.cli")

#: Where ``--token-file`` points by default (only read when it exists).
TOKEN_FILE_ENV = "CONDITIONSDB_TOKEN_FILE"

_TOKEN_SOURCES = ("pass one with --token, the CONDITIONSDB_TOKEN variable, or a token file "
                  "(--token-file, CONDITIONSDB_TOKEN_FILE, default {default})")

#: What to try next, per error code; the error message itself says what went wrong.
HINTS: dict[str, str] = {
    "unknown_tag": "list the existing tags with `conditionsdb tag list`",
    "tag_exists": "pick another name, or use the existing tag",
    "unknown_payload": "check the payload name and revision; a tag's payloads are listed by `conditionsdb iov list TAG`",
    "unknown_iov": "list a tag's IoVs (with their ids) with `conditionsdb iov list TAG`",
    "unknown_token": "list the tokens (with their ids) with `conditionsdb token list`",
    "frozen_tag": "only OPEN tags take IoV changes (RUNNING ones only appends): clone the tag into a new OPEN one "
                  "with `conditionsdb tag clone SRC DST` to change it",
    "unusable_tag": "use a tag in TESTING, VALIDATED, PUBLISHED or RUNNING state, or pass --allow-open for an OPEN one",
    "invalid_transition": "the lifecycle is OPEN -> TESTING -> VALIDATED -> PUBLISHED (or OPEN -> RUNNING), "
                          "and PUBLISHED/RUNNING -> INVALID",
    "no_payload": "check which runs the tag covers with `conditionsdb iov list TAG`",
    "invalid_iov": "an IoV is FIRST_EXP,FIRST_RUN,FINAL_EXP,FINAL_RUN; -1 as final run = all runs, -1,-1 = open-ended",
    "invalid_name": "tag names: letters, digits and +-_: ; payload names: letters, digits and _-+",
    "invalid_value": "check the arguments of the command (`conditionsdb COMMAND --help`)",
    "not_a_store": "check --db (or CONDITIONSDB_URL): a file path, sqlite:///PATH, postgresql://..., "
                   "http(s)://server, or a snapshot directory for reading",
    "read_only": "this source can only be read: point --db at a store (SQLite, PostgreSQL) or a server to write",
    "concurrent_modification": "another writer was busy with the same data; nothing was written, run the command again",
    "checksum_mismatch": "the payload file is damaged: restore it (re-download, or restore the payload directory) "
                         "or re-upload the payload",
    "unauthenticated": _TOKEN_SOURCES + "; an administrator creates tokens with "
                       "`conditionsdb --db DATABASE token create NAME --scope ...`",
    "forbidden": "ask an administrator for a token whose scopes cover this (admin, or iov:<tag glob>)",
    "payload_too_large": "the server refuses payloads this large: ask its operator to raise --max-upload-bytes",
    "all_servers_failed": "check the server URL and your network; run with -v for details, and retry later",
    "server_error": "the server failed; retry later, or ask its operator to look at the server log",
    "offline": "go online, or use a source that holds the payload locally",
    "cache_lock_timeout": "another process is still downloading the same payload; retry when it is done",
}


def default_token_file() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("conditionsdb", appauthor=False)) / "token"


def read_token_file(path: Path, *, explicit: bool) -> str | None:
    """The first non-empty, non-comment line of ``path``. A missing default file is no
    token; a missing file named on the command line is a usage error."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except FileNotFoundError:
        if explicit:
            raise click.BadParameter(f"token file {path} does not exist", param_hint="--token-file") from None
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise click.BadParameter(f"cannot read token file {path}: {error}", param_hint="--token-file") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        click.echo(f"warning: token file {path} is readable by others; `chmod 600 {path}`", err=True)
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line
    if explicit:
        raise click.BadParameter(f"token file {path} holds no token", param_hint="--token-file")
    return None


def is_http(spec: str) -> bool:
    return spec.strip().lower().startswith(("http://", "https://"))


class CliContext:
    """The object behind ``click.Context.obj`` for every conditionsdb command."""

    def __init__(self, db: str | None, *, token: str | None = None, json_output: bool = False,
                 verbose: int = 0, payload_dir: str | None = None, token_file: str | None = None,
                 cache_dir: str | None = None):
        self.db = db
        self._token = token or None
        #: Where the token came from, for error messages (None: not looked up yet).
        self.token_source: str | None = "--token or CONDITIONSDB_TOKEN" if self._token else None
        self.token_file = token_file
        self.json_output = json_output
        self.verbose = verbose
        self.payload_dir = payload_dir
        self.cache_dir = cache_dir
        self._store = None
        self._cache = None
        #: How ``--db`` becomes a store: ``opener(cli, mode)``, mode "read", "write" or
        #: "create" (see open_cli_store). Replaceable in tests.
        self.opener: Callable[["CliContext", str], Any] = open_cli_store

    # -- the store ---------------------------------------------------------------------
    @property
    def token(self) -> str | None:
        """--token / CONDITIONSDB_TOKEN, else the token file (explicit, or the default one)."""
        if self._token is None and self.token_source is None:
            if self.token_file:
                path = Path(self.token_file).expanduser()
                self._token = read_token_file(path, explicit=True)
            else:
                path = default_token_file()
                self._token = read_token_file(path, explicit=False)
            self.token_source = f"token file {path}" if self._token else "none"
        return self._token

    @property
    def is_remote(self) -> bool:
        return bool(self.db) and is_http(self.db)

    def _open(self, mode: str):
        if self._store is None:
            if not self.db:
                raise click.UsageError("no store given: pass --db URL or set CONDITIONSDB_URL")
            self._store = self.opener(self, mode)
            log.info("opened %s", getattr(self._store, "description", self.db))
        return self._store

    @property
    def store(self):
        """The store named by ``--db`` for reading: a missing SQLite file is an error, not
        a new empty store (a typo in --db must not create files)."""
        return self._open("read")

    @property
    def writable_store(self):
        """The store named by ``--db`` for changing: it must exist; a snapshot is refused
        (ReadOnlyStoreError)."""
        return self._writable("write")

    @property
    def creating_store(self):
        """Like :attr:`writable_store`, but a missing SQLite file becomes a new store (for
        the commands that make sense on an empty store: ``tag create``, ``token create``)."""
        return self._writable("create")

    def _writable(self, mode: str):
        store = self._open(mode)
        if getattr(store, "read_only", False):
            raise ReadOnlyStoreError(f"{store.description} is read-only; --db must name a store or a server to write")
        return store

    @property
    def cache(self):
        """The payload cache (--cache-dir, CONDITIONS_CACHE_DIR, or the user's cache directory)."""
        if self._cache is None:
            from ..cache import PayloadCache

            self._cache = PayloadCache(self.cache_dir)
        return self._cache

    def check_can_write(self, tag: str | None, action: str) -> None:
        """For a server: fail early (and write nothing) when no token is known, the token is
        refused, or its scopes do not cover ``tag``. Stores on this machine need no token."""
        if not self.is_remote:
            return
        from ..exceptions import AuthenticationError, PermissionDeniedError

        if not self.token:
            raise AuthenticationError(f"{action} on {self.db} needs an API token, and none was given")
        try:
            me = self.store.whoami()
        except AuthenticationError as error:
            raise AuthenticationError(f"{self.db} refused the API token from {self.token_source} ({error}); "
                                      "nothing was written") from None
        if tag is not None:
            from ..server.auth import may_write_tag

            if not may_write_tag(me, tag):
                raise PermissionDeniedError(
                    f"token {me.name!r} (scopes {', '.join(me.scopes) or 'none'}) may not {action} "
                    f"in global tag {tag!r}; nothing was written"
                )

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- output ----------------------------------------------------------------------------
    def emit(self, data: Any, text: str | None = None) -> None:
        """Print ``data`` as JSON with --json, else ``text`` (or a plain rendering)."""
        if self.json_output:
            click.echo(json.dumps(to_jsonable(data), indent=2, sort_keys=True))
        elif text is not None:
            click.echo(text)
        else:
            click.echo(json.dumps(to_jsonable(data), indent=2, sort_keys=True))

    def progress(self, total: int | None, description: str, unit: str = "file"):
        """A tqdm progress bar on stderr; silent when stderr is not a terminal or with --json."""
        from tqdm import tqdm

        return tqdm(total=total, desc=description, unit=unit, file=sys.stderr, leave=False,
                    disable=True if self.json_output else None, dynamic_ncols=True)


def open_cli_store(cli: CliContext, mode: str):
    """Open ``--db``: an http(s) server (the REST client), PostgreSQL, an SQLite store, or
    (read-only) a basf2 snapshot directory or metadata file.

    ``mode``: "read", "write" (a snapshot is refused), or "create" (also: a missing SQLite
    file becomes a new store; otherwise it is NotAStoreError, so a typo creates nothing).
    """
    writable = mode != "read"
    spec = str(cli.db).strip()
    lower = spec.lower()
    if is_http(spec):
        from ..client import ConditionsClient

        if cli.payload_dir:
            log.warning("--payload-dir is ignored for a server: it keeps its own payloads")
        try:
            return ConditionsClient(spec, token=cli.token, cache=cli.cache)
        except ValueError as error:
            raise NotAStoreError(f"bad server URL {spec!r}: {error}") from None
    # Only commands that make sense on a new store ("create") may initialise one; every
    # other command refuses a missing file, an empty file or an empty database.
    create = mode == "create"
    if lower.startswith(("postgresql:", "postgresql+", "postgres:", "postgres+")):
        from ..store import open_store

        return open_store(spec, cli.payload_dir, create=create)
    if lower.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        try:
            database = make_url(spec).database
        except Exception as error:  # sqlalchemy's ArgumentError: an unparseable URL
            raise NotAStoreError(f"cannot parse store URL {spec!r}: {error}") from None
        path = Path(database or "").expanduser()
    elif "://" in spec:
        raise NotAStoreError(f"{spec}: unknown kind of store URL")
    else:
        path = Path(spec).expanduser()
    from ..snapshot import METADATA_FILE, SnapshotSource, is_snapshot_file

    if path.is_dir() or (path.is_file() and is_snapshot_file(path)):
        if path.is_dir() and not (path / METADATA_FILE).exists():
            raise NotAStoreError(f"{path} is a directory without a basf2 snapshot ({METADATA_FILE}) in it")
        if writable:
            raise ReadOnlyStoreError(f"{path} is a basf2 snapshot, which is read-only")
        return SnapshotSource(path)
    if str(path) and not path.exists() and mode != "create":
        raise NotAStoreError(
            f"no conditions store at {path} (no such file); check --db, or create a store there with "
            f"`conditionsdb --db {spec} tag create NAME`"
        )
    from ..store import open_store

    return open_store(spec, cli.payload_dir, create=create)


pass_cli = click.make_pass_decorator(CliContext)


class CliFailure(click.ClickException):
    """A failure found by the CLI itself (not the store): ``error: ...`` on stderr, exit 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


# -- parameter types: malformed values are usage errors (exit 2) ---------------------------

class IoVType(click.ParamType):
    """``FE,FR,LE,LR`` as an IntervalOfValidity."""

    name = "FE,FR,LE,LR"

    def convert(self, value, param, ctx):
        if isinstance(value, IntervalOfValidity):
            return value
        try:
            return IntervalOfValidity.parse(str(value))
        except InvalidIoVError as error:
            self.fail(f"{error} (example: 1,0,1,-1; -1 as final run = every run of that experiment, "
                      "0,0,-1,-1 = always)", param, ctx)


class StateType(click.ParamType):
    """A global tag state, any case."""

    name = "STATE"

    def convert(self, value, param, ctx):
        if isinstance(value, GlobalTagState):
            return value
        try:
            return GlobalTagState.parse(value)
        except TagStateError:
            names = ", ".join(s.value for s in GlobalTagState)
            self.fail(f"{value!r} is not a global tag state; choose one of {names}", param, ctx)


IOV = IoVType()
STATE = StateType()


def parse_metadata(items: Sequence[str]) -> dict:
    """``key=value`` pairs; values are JSON when they parse as JSON (numbers, true, lists),
    plain strings otherwise. A malformed item is a usage error."""
    metadata = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected key=value, got {item!r} (e.g. --meta calibrated_by=alice)",
                                     param_hint="--meta")
        try:
            metadata[key.strip()] = json.loads(value)
        except ValueError:
            metadata[key.strip()] = value
    return metadata


def run_option(help_text: str = "Only what is valid for this experiment and run."):
    """``--run EXP RUN``: two non-negative integers."""
    return click.option("--run", "run", nargs=2, type=click.IntRange(min=0), default=None,
                        metavar="EXP RUN", help=help_text)


# -- rendering ---------------------------------------------------------------------------------

def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, right: Sequence[int] = (),
          indent: str = "") -> str:
    """A plain-text table, columns as wide as their widest cell; ``right``: right-aligned
    column indexes. The last column is never padded (no trailing blanks)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = []
        for i, cell in enumerate(row):
            if i == len(row) - 1 and i not in right:
                parts.append(cell)
            elif i in right:
                parts.append(cell.rjust(widths[i]))
            else:
                parts.append(cell.ljust(widths[i]))
        lines.append(indent + "  ".join(parts).rstrip())
    return "\n".join(lines)


def iov_rows(records) -> list[tuple]:
    return [(r.iov_id if r.iov_id is not None else "-", r.payload.name, r.payload.revision, r.iov,
             r.payload.checksum) for r in records]


IOV_HEADERS = ("ID", "PAYLOAD", "REV", "IOV (FE,FR,LE,LR)", "MD5")


def to_jsonable(value: Any) -> Any:
    """Dataclasses, enums, datetimes, paths and IoVs as plain JSON values."""
    if isinstance(value, IntervalOfValidity):
        return list(value.as_tuple())
    if is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(getattr(value, k)) for k in asdict(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value


class ConditionsGroup(click.Group):
    """A click group that reports ConditionsError (and OS errors such as a full disk) as
    ``error: ...`` plus a hint, exit 1, and closes the store afterwards."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (ConditionsError, OSError) as error:
            cli = ctx.find_object(CliContext)
            if cli is not None and cli.verbose:
                traceback.print_exc(file=sys.stderr)
            click.echo(f"error: {error}", err=True)
            hint = HINTS.get(getattr(error, "code", ""))
            if hint is None and not isinstance(error, ConditionsError):
                hint = "check the file or directory named above: does it exist, may you write there, is the disk full?"
            if hint:
                click.echo(f"hint: {hint.format(default=default_token_file())}", err=True)
            ctx.exit(1)
        finally:
            cli = ctx.find_object(CliContext)
            if cli is not None:
                cli.close()
