"""Alembic migrations of the conditions store schema, applied programmatically when a
store is opened (see ``conditions.store.sql``). No alembic.ini is needed: the
configuration is built in code, so a plain ``pip install .`` ships everything.

Adding a schema change: write ``versions/NNNN_what.py`` with ``down_revision`` set to
the current head, then update :data:`HEAD` (a test checks it matches the scripts).
"""

from pathlib import Path

#: The newest revision. Opening a store at this revision skips Alembic entirely.
HEAD = "0001"

SCRIPT_LOCATION = str(Path(__file__).resolve().parent)
