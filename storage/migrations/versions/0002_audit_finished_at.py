"""The audit trail of admin actions; when a generation finished; an index for the posting quota.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=True),
        sa.Column("actor_name", sa.String(200), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
    # Generations finished before 0002 get their start time: the closest known (a sample takes seconds).
    generations = sa.table("generations", sa.column("status", sa.String), sa.column("finished_at"),
                           sa.column("created_at"))
    op.execute(generations.update().where(generations.c.status != "pending")
               .values(finished_at=generations.c.created_at))
    op.create_index(op.f("ix_posts_platform_posted_at"), "posts", ["platform", "posted_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_posts_platform_posted_at"), table_name="posts")
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("finished_at")
    op.drop_index(op.f("ix_audit_log_at"), table_name="audit_log")
    op.drop_table("audit_log")
