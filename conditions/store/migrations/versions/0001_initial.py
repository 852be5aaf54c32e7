"""Initial schema: global tags, payloads, IoVs, audit log, API tokens (hashed).

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NAME = 200


def upgrade() -> None:
    op.create_table(
        "global_tags",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(NAME), nullable=False, unique=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("change_serial", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("modified", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(NAME), nullable=False),
        sa.Column("modified_by", sa.String(NAME), nullable=False),
    )
    op.create_table(
        "payloads",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("url", sa.String(512), nullable=False, unique=True),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("creator", sa.String(NAME), nullable=False),
        sa.UniqueConstraint("name", "revision", name="uq_payloads_name_revision"),
        sa.UniqueConstraint("name", "sha256", name="uq_payloads_name_sha256"),
    )
    op.create_index("ix_payloads_sha256", "payloads", ["sha256"])
    op.create_table(
        "iovs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tag_id", sa.Integer(), sa.ForeignKey("global_tags.id", ondelete="CASCADE"), nullable=False),
        sa.Column("payload_id", sa.Integer(), sa.ForeignKey("payloads.id"), nullable=False),
        sa.Column("payload_name", sa.String(NAME), nullable=False),
        sa.Column("first_exp", sa.Integer(), nullable=False),
        sa.Column("first_run", sa.Integer(), nullable=False),
        sa.Column("final_exp", sa.Integer(), nullable=False),
        sa.Column("final_run", sa.Integer(), nullable=False),
        sa.Column("upper_exp", sa.BigInteger(), nullable=False),
        sa.Column("upper_run", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(NAME), nullable=False),
    )
    op.create_index("ix_iovs_tag_name_first", "iovs", ["tag_id", "payload_name", "first_exp", "first_run"])
    op.create_index("ix_iovs_tag_name_upper", "iovs", ["tag_id", "payload_name", "upper_exp", "upper_run"])
    op.create_index("ix_iovs_payload", "iovs", ["payload_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("who", sa.String(NAME), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("tag", sa.String(NAME), nullable=True),
        sa.Column("details_json", sa.Text(), nullable=False),
    )
    op.create_index("ix_audit_log_tag", "audit_log", ["tag"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("scopes_json", sa.Text(), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(NAME), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
    op.drop_index("ix_audit_log_tag", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_iovs_payload", table_name="iovs")
    op.drop_index("ix_iovs_tag_name_upper", table_name="iovs")
    op.drop_index("ix_iovs_tag_name_first", table_name="iovs")
    op.drop_table("iovs")
    op.drop_index("ix_payloads_sha256", table_name="payloads")
    op.drop_table("payloads")
    op.drop_table("global_tags")
