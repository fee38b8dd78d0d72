"""persisted key rotation: the rotation in progress, its target key and phase

`chatsec keys rotate` records in chat.deployment which key it rotates to and how far it
got (rewriting, draining, vacuuming, finished), in the same transaction that
registers the new key. A rerun after a kill at any moment reads it back and finishes
that rotation with that key; only a finished rotation lets the next one make a new key,
and `keys generate` waits for an unfinished one to be finished.

Written by hand: the columns are schema, not policy (chat.deployment's grants and
policies in policies/ already let chat_owner update them and the others read them).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SET LOCAL ROLE chat_owner")
    op.execute(
        "ALTER TABLE chat.deployment "
        "ADD COLUMN rotation_key_id text REFERENCES chat.encryption_keys (id), "
        "ADD COLUMN rotation_phase text CHECK (rotation_phase IN "
        "('rewriting', 'draining', 'vacuuming', 'finished')), "
        "ADD COLUMN rotation_started_at timestamptz, "
        "ADD COLUMN rotation_finished_at timestamptz, "
        "ADD CONSTRAINT deployment_rotation_complete CHECK ("
        "(rotation_key_id IS NULL) = (rotation_phase IS NULL) "
        "AND (rotation_key_id IS NULL) = (rotation_started_at IS NULL) "
        "AND (rotation_phase = 'finished') = (rotation_finished_at IS NOT NULL))"
    )
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute("SET LOCAL ROLE chat_owner")
    op.execute(
        "ALTER TABLE chat.deployment DROP CONSTRAINT deployment_rotation_complete, "
        "DROP COLUMN rotation_key_id, DROP COLUMN rotation_phase, "
        "DROP COLUMN rotation_started_at, DROP COLUMN rotation_finished_at"
    )
    op.execute("RESET ROLE")
