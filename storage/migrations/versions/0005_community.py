"""A community's controls: vetoed candidates, withdrawn posts, the blocklist in the log, a run per channel.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _who(prefix: str) -> list[sa.Column]:
    """vetoed_at, vetoed_by_id, vetoed_by_name (or deleted_…): when, and by whom."""
    return [sa.Column(f"{prefix}_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column(f"{prefix}_by_id", sa.String(64), nullable=True),
            sa.Column(f"{prefix}_by_name", sa.String(200), nullable=True)]


def upgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        for column in _who("vetoed"):
            batch.add_column(column)
    with op.batch_alter_table("posts") as batch:
        for column in _who("deleted"):
            batch.add_column(column)
    op.create_table(
        "blocked_words",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("word_key", sa.String(200), nullable=False),
        sa.Column("word", sa.String(200), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by_id", sa.String(64), nullable=True),
        sa.Column("added_by_name", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blocked_words")),
        sa.UniqueConstraint("word_key", name=op.f("uq_blocked_words_word_key")),
    )
    op.create_table(
        "channel_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("server_id", sa.String(64), nullable=False),
        sa.Column("channel_id", sa.String(64), nullable=False),
        sa.Column("run_name", sa.String(200), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("set_by_id", sa.String(64), nullable=True),
        sa.Column("set_by_name", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_runs")),
        sa.UniqueConstraint("platform", "server_id", "channel_id",
                            name=op.f("uq_channel_runs_platform_server_id_channel_id")),
    )


def downgrade() -> None:
    op.drop_table("channel_runs")
    op.drop_table("blocked_words")
    with op.batch_alter_table("posts") as batch:
        for column in ("deleted_at", "deleted_by_id", "deleted_by_name"):
            batch.drop_column(column)
    with op.batch_alter_table("candidates") as batch:
        for column in ("vetoed_at", "vetoed_by_id", "vetoed_by_name"):
            batch.drop_column(column)
