"""Users, revoked tokens, groups, alert rules and alerts; event indexes by user and type.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("username", sa.String(80), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("is_active", sa.Boolean, nullable=False),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("preferences", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("last_login", sa.BigInteger),
        sa.UniqueConstraint("user_id", name="uq_users_user_id"),
        sa.UniqueConstraint("username", name="uq_users_username"),
        sa.UniqueConstraint("email", name="uq_users_email"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_revoked_tokens_expires_at", "revoked_tokens", ["expires_at"])
    op.create_table(
        "device_groups",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("color", sa.String(7), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("user_id", "name", name="uq_groups_user_name"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_device_groups_user_id", "device_groups", ["user_id"])
    op.create_table(
        "group_members",
        sa.Column(
            "group_id", sa.Integer, sa.ForeignKey("device_groups.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("device_id", sa.Integer, sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("added_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_group_members_device_id", "group_members", ["device_id"])
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("user_id", sa.Integer),
        sa.Column("device_id", sa.Integer),
        sa.Column("group_id", sa.Integer),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("operator", sa.String(2), nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("severity", sa.String(10), nullable=False),
        sa.Column("for_seconds", sa.Integer, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_alert_rules_user_id", "alert_rules", ["user_id"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("rule_id", sa.Integer, sa.ForeignKey("alert_rules.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.Integer),
        sa.Column("device_id", sa.Integer, nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("operator", sa.String(2), nullable=False),
        sa.Column("severity", sa.String(10), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("opened_at", sa.BigInteger, nullable=False),
        sa.Column("acknowledged_at", sa.BigInteger),
        sa.Column("resolved_at", sa.BigInteger),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_alerts_user_state", "alerts", ["user_id", "state"])
    op.create_index("ix_alerts_rule_device_state", "alerts", ["rule_id", "device_id", "state"])
    op.create_index("ix_events_user_ts", "events", ["user_id", "ts"])
    op.create_index("ix_events_type_ts", "events", ["type", "ts"])


def downgrade() -> None:
    op.drop_index("ix_events_type_ts", table_name="events")
    op.drop_index("ix_events_user_ts", table_name="events")
    op.drop_table("alerts")
    op.drop_table("alert_rules")
    op.drop_table("group_members")
    op.drop_table("device_groups")
    op.drop_table("revoked_tokens")
    op.drop_table("users")
