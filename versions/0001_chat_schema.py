"""chat schema: users, threads, thread_participants, messages, attachments

The design's tables with its columns, defaults and indexes, owned by the NOLOGIN
role chat_owner in schema `chat`. Deviations from the design are listed in
docs/schema.md (TIMESTAMPTZ, created_by, the composite parent FK).

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Roles are cluster-wide: another database of the cluster may have made it already.
    op.execute(
        """
        DO $$
        BEGIN
          IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'chat_owner') THEN
            CREATE ROLE chat_owner NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
          END IF;
        END
        $$
        """
    )
    # The migrator acts as the owner (SET ROLE) so that it never owns chat objects itself.
    op.execute("GRANT chat_owner TO CURRENT_USER")
    op.execute("CREATE SCHEMA extensions AUTHORIZATION chat_owner")
    op.execute("CREATE SCHEMA chat AUTHORIZATION chat_owner")
    op.execute("REVOKE ALL ON SCHEMA chat FROM PUBLIC")
    op.execute("REVOKE ALL ON SCHEMA extensions FROM PUBLIC")
    # Trusted extensions (PostgreSQL 13+): a database owner may create them without superuser.
    op.execute('CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA extensions')
    op.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA extensions")

    op.execute("SET LOCAL ROLE chat_owner")
    op.execute(
        """
        CREATE FUNCTION chat.set_updated_at() RETURNS trigger
        LANGUAGE plpgsql SET search_path = '' AS $$
        BEGIN
          NEW.updated_at := pg_catalog.now();
          RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TABLE chat.users (
          id UUID PRIMARY KEY DEFAULT extensions.uuid_generate_v4(),
          email VARCHAR(255) UNIQUE NOT NULL,
          username VARCHAR(50) UNIQUE NOT NULL,
          first_name VARCHAR(100),
          last_name VARCHAR(100),
          profile_image VARCHAR(255),
          is_active BOOLEAN DEFAULT true,
          last_login_at TIMESTAMPTZ,
          created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
          updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
        )
        """
    )
    op.execute("CREATE INDEX idx_users_email ON chat.users(email)")
    op.execute("CREATE INDEX idx_users_username ON chat.users(username)")
    op.execute(
        """
        CREATE TABLE chat.threads (
          id UUID PRIMARY KEY DEFAULT extensions.uuid_generate_v4(),
          name VARCHAR(255),
          is_direct BOOLEAN DEFAULT false,
          is_archived BOOLEAN DEFAULT false,
          created_by UUID REFERENCES chat.users(id) ON DELETE SET NULL,
          last_message_at TIMESTAMPTZ,
          created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
          updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
        )
        """
    )
    op.execute("CREATE INDEX idx_threads_last_message ON chat.threads(last_message_at DESC)")
    op.execute("CREATE INDEX idx_threads_created_by ON chat.threads(created_by)")
    op.execute(
        """
        CREATE TABLE chat.thread_participants (
          thread_id UUID NOT NULL REFERENCES chat.threads(id) ON DELETE CASCADE,
          user_id UUID NOT NULL REFERENCES chat.users(id) ON DELETE CASCADE,
          role VARCHAR(20) NOT NULL DEFAULT 'member'
            CHECK (role IN ('member', 'admin', 'owner')),
          joined_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
          last_read_at TIMESTAMPTZ,
          PRIMARY KEY (thread_id, user_id)
        )
        """
    )
    op.execute(
        "CREATE INDEX idx_thread_participants_user ON chat.thread_participants(user_id, thread_id)"
    )
    op.execute(
        """
        CREATE TABLE chat.messages (
          id UUID PRIMARY KEY DEFAULT extensions.uuid_generate_v4(),
          thread_id UUID NOT NULL REFERENCES chat.threads(id) ON DELETE CASCADE,
          user_id UUID NOT NULL REFERENCES chat.users(id) ON DELETE CASCADE,
          content TEXT NOT NULL,
          parent_id UUID,
          status VARCHAR(20) DEFAULT 'sent',
          metadata JSONB,
          created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
          updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
          -- A reply's parent must be in the same thread: the database enforces it, so no
          -- policy has to read messages from inside a messages policy.
          CONSTRAINT messages_id_thread_key UNIQUE (id, thread_id),
          CONSTRAINT messages_parent_fkey FOREIGN KEY (parent_id, thread_id)
            REFERENCES chat.messages(id, thread_id) ON DELETE SET NULL (parent_id)
        )
        """
    )
    op.execute("CREATE INDEX idx_messages_thread ON chat.messages(thread_id, created_at DESC)")
    op.execute("CREATE INDEX idx_messages_user ON chat.messages(user_id, created_at DESC)")
    op.execute("CREATE INDEX idx_messages_parent ON chat.messages(parent_id)")
    op.execute("CREATE INDEX idx_messages_metadata ON chat.messages USING gin (metadata)")
    op.execute(
        """
        CREATE TABLE chat.attachments (
          id UUID PRIMARY KEY DEFAULT extensions.uuid_generate_v4(),
          message_id UUID NOT NULL REFERENCES chat.messages(id) ON DELETE CASCADE,
          file_name VARCHAR(255) NOT NULL,
          content_type VARCHAR(255) NOT NULL,
          byte_size BIGINT NOT NULL CHECK (byte_size >= 0),
          storage_key VARCHAR(1024) NOT NULL UNIQUE,
          created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
        )
        """
    )
    op.execute("CREATE INDEX idx_attachments_message ON chat.attachments(message_id)")
    for table in ("users", "threads", "messages"):
        op.execute(
            f"CREATE TRIGGER {table}_set_updated_at BEFORE UPDATE ON chat.{table} "
            f"FOR EACH ROW EXECUTE FUNCTION chat.set_updated_at()"
        )
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute("SET LOCAL ROLE chat_owner")
    op.execute("DROP TABLE chat.attachments")
    op.execute("DROP TABLE chat.messages")
    op.execute("DROP TABLE chat.thread_participants")
    op.execute("DROP TABLE chat.threads")
    op.execute("DROP TABLE chat.users")
    op.execute("DROP FUNCTION chat.set_updated_at()")
    op.execute("RESET ROLE")
    op.execute("DROP EXTENSION IF EXISTS pgcrypto")
    op.execute('DROP EXTENSION IF EXISTS "uuid-ossp"')
    op.execute("DROP SCHEMA chat")
    op.execute("DROP SCHEMA extensions")
    # chat_owner stays: roles are cluster-wide and other databases may still use it.
