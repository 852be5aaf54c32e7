"""The store's database schema as SQLAlchemy 2 ORM tables.

The same tables serve SQLite and PostgreSQL. The Alembic migrations in
``conditions/store/migrations`` create exactly this schema (a test compares the two);
change both together, by adding a migration, never by editing an applied one.

Design notes for the database reader:

* ``iovs`` stores the IoV as given (``final_* = -1`` for the open ends) *and* the upper
  point with -1 replaced by a large sentinel (``upper_exp``, ``upper_run``), so that
  "does this IoV contain (exp, run)" is a plain range condition an index can serve.
* ``iovs.payload_name`` duplicates ``payloads.name`` (payloads are immutable, so it can
  never drift) to let one index answer "IoVs of payload X in tag T around point P".
* ``global_tags.change_serial`` is bumped by every write that changes what the tag
  resolves to (IoV changes, state changes). Readers key their in-process caches on it.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

#: Stored in ``upper_exp``/``upper_run`` for "-1" (unbounded). Same value as the IoV
#: module's internal infinity, and it fits a signed 64-bit column.
UNBOUNDED = 1 << 62

NAME_LENGTH = 200


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class GlobalTagRow(Base):
    __tablename__ = "global_tags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    change_serial: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    modified: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_by: Mapped[str] = mapped_column(String(NAME_LENGTH), nullable=False)
    modified_by: Mapped[str] = mapped_column(String(NAME_LENGTH), nullable=False)


class PayloadRow(Base):
    __tablename__ = "payloads"
    __table_args__ = (
        UniqueConstraint("name", "revision", name="uq_payloads_name_revision"),
        # Same bytes under the same name are one payload, even when two writers race.
        UniqueConstraint("name", "sha256", name="uq_payloads_name_sha256"),
        Index("ix_payloads_sha256", "sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), nullable=False)
    revision: Mapped[int] = mapped_column(Integer, nullable=False)
    checksum: Mapped[str] = mapped_column(String(32), nullable=False)  # MD5 hex
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    url: Mapped[str] = mapped_column(String(512), nullable=False, unique=True)
    metadata_json: Mapped[str] = mapped_column(Text, nullable=False, default="{}")
    created: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    creator: Mapped[str] = mapped_column(String(NAME_LENGTH), nullable=False)


class IoVRow(Base):
    __tablename__ = "iovs"
    __table_args__ = (
        Index("ix_iovs_tag_name_first", "tag_id", "payload_name", "first_exp", "first_run"),
        Index("ix_iovs_tag_name_upper", "tag_id", "payload_name", "upper_exp", "upper_run"),
        Index("ix_iovs_payload", "payload_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("global_tags.id", ondelete="CASCADE"), nullable=False)
    payload_id: Mapped[int] = mapped_column(ForeignKey("payloads.id"), nullable=False)
    payload_name: Mapped[str] = mapped_column(String(NAME_LENGTH), nullable=False)
    first_exp: Mapped[int] = mapped_column(Integer, nullable=False)
    first_run: Mapped[int] = mapped_column(Integer, nullable=False)
    final_exp: Mapped[int] = mapped_column(Integer, nullable=False)
    final_run: Mapped[int] = mapped_column(Integer, nullable=False)
    upper_exp: Mapped[int] = mapped_column(BigInteger, nullable=False)
    upper_run: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_by: Mapped[str] = mapped_column(String(NAME_LENGTH), nullable=False)


class AuditRow(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_tag", "tag"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    who: Mapped[str] = mapped_column(String(NAME_LENGTH), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    tag: Mapped[str | None] = mapped_column(String(NAME_LENGTH), nullable=True)
    details_json: Mapped[str] = mapped_column(Text, nullable=False, default="{}")


class TokenRow(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), nullable=False)
    scopes_json: Mapped[str] = mapped_column(Text, nullable=False)
    # SHA-256 of the secret. Secrets are 256 random bits, so a fast hash is enough:
    # there is nothing to brute-force that a slow hash would protect.
    secret_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_by: Mapped[str] = mapped_column(String(NAME_LENGTH), nullable=False)
    revoked: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
