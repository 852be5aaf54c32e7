"""What every ``conditionsdb`` command shares: the lazily opened store, output in text or
JSON, and turning typed conditions errors into a message and an exit status.

A command module uses it like this::

    from .context import CliContext, pass_cli

    @click.command()
    @pass_cli
    def mycommand(cli: CliContext):
        cli.emit({"answer": 42}, "the answer is 42")
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Callable

import click

from ..exceptions import ConditionsError
from ..iov import IntervalOfValidity

log = logging.getLogger("conditions.cli")

#: What to try next, per error code; the error message itself says what went wrong.
HINTS: dict[str, str] = {
    "unknown_tag": "list the existing tags with `conditionsdb tag list`",
    "tag_exists": "pick another name, or use the existing tag",
    "unknown_payload": "check the payload name and revision; the store's payloads are listed by `conditionsdb tag show TAG`",
    "unknown_iov": "list a tag's IoVs (with their ids) with `conditionsdb tag show TAG`",
    "frozen_tag": "only OPEN tags take IoV changes (RUNNING ones only appends): clone the tag into a new OPEN one to change it",
    "unusable_tag": "use a tag in TESTING, VALIDATED, PUBLISHED or RUNNING state, or pass --allow-open for an OPEN one",
    "no_payload": "check which runs the tag covers with `conditionsdb tag show TAG`",
    "invalid_iov": "an IoV is FIRST_EXP,FIRST_RUN,FINAL_EXP,FINAL_RUN; -1 as final run = all runs, -1,-1 = open-ended",
    "invalid_name": "tag names: letters, digits and +-_: ; payload names: letters, digits and _-+",
    "not_a_store": "check --db (or CONDITIONSDB_URL): a file path, sqlite:///PATH or postgresql://...",
    "read_only": "this source can only be read",
    "concurrent_modification": "another writer was busy with the same data; nothing was written, run the command again",
    "checksum_mismatch": "the payload file is damaged: restore the payload directory or re-upload the payload",
}


class CliContext:
    """The object behind ``click.Context.obj`` for every conditionsdb command."""

    def __init__(self, db: str | None, *, token: str | None = None, json_output: bool = False,
                 verbose: int = 0, payload_dir: str | None = None):
        self.db = db
        self.token = token
        self.json_output = json_output
        self.verbose = verbose
        self.payload_dir = payload_dir
        self._store = None
        #: How ``--db`` becomes a store. Replaceable (e.g. to route http:// URLs to a client).
        self.opener: Callable[["CliContext"], Any] = _open_sql_store

    @property
    def store(self):
        """The store named by ``--db``, opened on first use."""
        if self._store is None:
            if not self.db:
                raise click.UsageError("no store given: pass --db URL or set CONDITIONSDB_URL")
            self._store = self.opener(self)
            log.info("opened %s", getattr(self._store, "description", self.db))
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def emit(self, data: Any, text: str | None = None) -> None:
        """Print ``data`` as JSON with --json, else ``text`` (or a plain rendering)."""
        if self.json_output:
            click.echo(json.dumps(to_jsonable(data), indent=2, sort_keys=True))
        elif text is not None:
            click.echo(text)
        else:
            click.echo(json.dumps(to_jsonable(data), indent=2, sort_keys=True))


def _open_sql_store(cli: CliContext):
    from ..store import open_store

    return open_store(cli.db, cli.payload_dir)


pass_cli = click.make_pass_decorator(CliContext)


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
    """A click group that reports ConditionsError as ``error: ...`` plus a hint, exit 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ConditionsError as error:
            cli = ctx.find_object(CliContext)
            if cli is not None and cli.verbose:
                traceback.print_exc(file=sys.stderr)
            click.echo(f"error: {error}", err=True)
            hint = HINTS.get(getattr(error, "code", ""))
            if hint:
                click.echo(f"hint: {hint}", err=True)
            ctx.exit(1)
        finally:
            cli = ctx.find_object(CliContext)
            if cli is not None:
                cli.close()
