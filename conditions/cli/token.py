"""``conditionsdb token ...``: API tokens for the REST service, managed on the database.

Only a hash of each secret is stored; ``create`` prints the secret once. Scopes:
``admin``, or ``iov:<tag glob>`` (upload payloads and change IoVs in matching tags).
"""

from __future__ import annotations

import click

from .context import CliContext, pass_cli


def _check_scope(scope: str) -> str:
    from ..exceptions import InvalidNameError
    from ..server.auth import validate_scope

    try:
        return validate_scope(scope)
    except InvalidNameError as error:
        raise click.BadParameter(str(error), param_hint="--scope") from None


@click.group()
def token():
    """API tokens: create, list, revoke."""


@token.command("create")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, required=True, metavar="SCOPE",
              help="'admin' or 'iov:<tag glob>' (repeatable), e.g. --scope 'iov:PXDBackground*'.")
@pass_cli
def create(cli: CliContext, name: str, scopes: tuple[str, ...]):
    """Create a token for NAME (who it is for: it signs the audit log) and print its secret once."""
    checked = [_check_scope(s) for s in scopes]
    cli.check_can_write(None, "create tokens")
    info, secret = cli.creating_store.create_token(name, checked)
    cli.emit({"token": info, "secret": secret},
             f"token {info.token_id} for {info.name} ({', '.join(info.scopes)})\n"
             f"secret (shown only now, store it safely): {secret}")


@token.command("list")
@pass_cli
def list_(cli: CliContext):
    """List tokens (never their secrets)."""
    tokens = cli.store.list_tokens()
    lines = [f"{'ID':>4}  {'NAME':<20}  {'STATE':<7}  SCOPES"]
    lines += [f"{t.token_id:>4}  {t.name:<20}  {'revoked' if t.revoked else 'live':<7}  {', '.join(t.scopes)}"
              for t in tokens]
    cli.emit(tokens, "\n".join(lines))


@token.command("revoke")
@click.argument("token_id", type=int)
@pass_cli
def revoke(cli: CliContext, token_id: int):
    """Revoke token TOKEN_ID: requests carrying it are refused (401) from now on."""
    cli.check_can_write(None, "revoke tokens")
    info = cli.writable_store.revoke_token(token_id)
    cli.emit(info, f"revoked token {info.token_id} ({info.name})")
