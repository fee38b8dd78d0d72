"""message encryption: key registry, messages.key_id, the encryption trigger, key rotator

Written by hand, because it changes the schema (a column, a table, a trigger, a
view). The roles, grants, policies and functions it creates are declared in
policies/ (functions.toml, roles.toml, schemas.toml, tables/encryption_keys.toml,
tables/messages.toml, tables/messages_decrypted.toml); their SQL below is what
`chatsec plan` printed for them, so the plan is empty after this revision.
See docs/encryption.md.

Rows that exist before this revision stay plaintext with key_id NULL (a migration
never sees a key); the first `chatsec keys rotate` encrypts them.

Downgrade refuses while any message is encrypted: below this revision key_id is gone,
and a later upgrade would take every ciphertext for plaintext (key_id NULL). Only a
rollback to base, which drops the messages themselves, goes ahead. It leaves the
migrator's membership in chat_key_rotator: memberships are cluster-wide, and
`chatsec keys` on the cluster's other chat databases still needs it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DO $$\nBEGIN\n  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'chat_key_rotator') THEN\n    CREATE ROLE chat_key_rotator NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION INHERIT;\n  END IF;\nEND\n$$")
    # `chatsec keys rotate` connects as the migrator and acts as chat_key_rotator (SET ROLE).
    op.execute("GRANT chat_key_rotator TO CURRENT_USER")
    op.execute("SET LOCAL ROLE chat_owner")
    op.execute("ALTER TABLE chat.messages ADD COLUMN key_id TEXT")
    # Ids only, and an HMAC of each key keyed by the key itself: enough for the trigger
    # to reject a wrong key for an id, useless for decrypting anything.
    op.execute(
        """
        CREATE TABLE chat.encryption_keys (
          id TEXT PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
          verifier TEXT NOT NULL CHECK (verifier ~ '^[0-9a-f]{64}$'),
          created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
          retired_at TIMESTAMPTZ
        )
        """
    )
    op.execute('GRANT USAGE ON SCHEMA chat TO chat_key_rotator')
    op.execute('GRANT USAGE ON SCHEMA extensions TO chat_key_rotator')
    op.execute('CREATE FUNCTION chat.encrypt_message()\n  RETURNS trigger\n  LANGUAGE plpgsql\n  VOLATILE\n  SECURITY INVOKER\n  SET search_path = \'\'\nAS $fn$\nDECLARE\n  v_key text := pg_catalog.current_setting(\'app.encryption_key\', true);\n  v_key_id text := pg_catalog.current_setting(\'app.encryption_key_id\', true);\n  v_header_id text;\n  v_header_key text;\n  v_verifier text;\n  v_retired timestamptz;\nBEGIN\n  -- Rows from before encryption (key_id NULL) hold plaintext: any update encrypts them.\n  IF TG_OP = \'UPDATE\' AND NEW.content IS NOT DISTINCT FROM OLD.content\n     AND OLD.key_id IS NOT NULL THEN\n    NEW.key_id := OLD.key_id;\n    RETURN NEW;\n  END IF;\n\n  -- Already our ciphertext (INSERT ... ON CONFLICT DO UPDATE SET content = EXCLUDED.content\n  -- hands the UPDATE the row the INSERT trigger encrypted): keep it, once it is proven to\n  -- decrypt with this transaction\'s registered key for the id in its armor header.\n  IF NEW.content LIKE \'-----BEGIN PGP MESSAGE-----%\' THEN\n    BEGIN\n      SELECT h.value INTO v_header_id\n        FROM extensions.pgp_armor_headers(NEW.content) h\n       WHERE h.key = \'Chatsec-Key\';\n      IF v_header_id = v_key_id THEN\n        v_header_key := v_key;\n      ELSE\n        v_header_key := NULLIF(pg_catalog.current_setting(\'app.decryption_keys\', true), \'\')::jsonb\n                        ->> v_header_id;\n      END IF;\n      IF v_header_key IS NOT NULL AND v_header_key <> \'\' AND EXISTS (\n           SELECT 1 FROM chat.encryption_keys k\n            WHERE k.id = v_header_id AND k.retired_at IS NULL\n              AND k.verifier = pg_catalog.encode(\n                    extensions.hmac(\'chatsec-key-check\'::text, v_header_key, \'sha256\'), \'hex\'))\n      THEN\n        PERFORM extensions.pgp_sym_decrypt(extensions.dearmor(NEW.content), v_header_key);\n        NEW.key_id := v_header_id;\n        RETURN NEW;\n      END IF;\n    EXCEPTION\n      -- pgcrypto\'s "Corrupt ascii-armor" / "Wrong key or corrupt data", or bad JSON:\n      -- then it is not our ciphertext, and it is encrypted below like any text.\n      WHEN external_routine_invocation_exception OR invalid_text_representation THEN\n        NULL;\n    END;\n  END IF;\n\n  IF v_key IS NULL OR v_key = \'\' THEN\n    RAISE EXCEPTION \'chatsec: no encryption key in this transaction, message not stored\'\n      USING ERRCODE = \'28000\',\n            HINT = \'pass the keyring to chatsec.app.user_transaction (app.encryption_key)\';\n  END IF;\n  SELECT k.verifier, k.retired_at INTO v_verifier, v_retired\n    FROM chat.encryption_keys k WHERE k.id = v_key_id;\n  IF NOT FOUND THEN\n    RAISE EXCEPTION \'chatsec: encryption key id % is not registered, message not stored\',\n      pg_catalog.quote_literal(COALESCE(v_key_id, \'<none>\'))\n      USING ERRCODE = \'28000\', HINT = \'chatsec keys register\';\n  END IF;\n  IF v_retired IS NOT NULL THEN\n    RAISE EXCEPTION \'chatsec: encryption key % is retired, message not stored\',\n      pg_catalog.quote_literal(v_key_id) USING ERRCODE = \'28000\';\n  END IF;\n  IF v_verifier <> pg_catalog.encode(\n       extensions.hmac(\'chatsec-key-check\'::text, v_key, \'sha256\'), \'hex\') THEN\n    RAISE EXCEPTION \'chatsec: wrong key for encryption key id %, message not stored\',\n      pg_catalog.quote_literal(v_key_id) USING ERRCODE = \'28000\';\n  END IF;\n\n  -- Keys are 256 random bits, not passphrases: s2k-mode=1 (salted, not iterated),\n  -- since stretching only slows down guessing a low-entropy secret.\n  NEW.content := extensions.armor(\n    extensions.pgp_sym_encrypt(NEW.content, v_key, \'cipher-algo=aes256, s2k-mode=1\'),\n    ARRAY[\'Chatsec-Key\'], ARRAY[v_key_id]);\n  NEW.key_id := v_key_id;\n  -- A rotation rewrites ciphertext only: the message itself was not edited.\n  IF TG_OP = \'UPDATE\' AND CURRENT_USER = \'chat_key_rotator\' THEN\n    NEW.updated_at := OLD.updated_at;\n  END IF;\n  RETURN NEW;\nEND\n$fn$')
    op.execute('REVOKE EXECUTE ON FUNCTION chat.encrypt_message() FROM PUBLIC')
    op.execute('CREATE FUNCTION chat.decrypt_message(p_content text, p_key_id text)\n  RETURNS text\n  LANGUAGE plpgsql\n  STABLE\n  SECURITY INVOKER\n  SET search_path = \'\'\nAS $fn$\nDECLARE\n  v_keys jsonb;\n  v_key text;\nBEGIN\n  IF p_content IS NULL THEN\n    RETURN NULL;\n  END IF;\n  IF p_key_id IS NULL THEN\n    -- Written before encryption was deployed and not yet rotated: still plaintext.\n    RETURN p_content;\n  END IF;\n  BEGIN\n    v_keys := NULLIF(pg_catalog.current_setting(\'app.decryption_keys\', true), \'\')::jsonb;\n  EXCEPTION WHEN invalid_text_representation THEN\n    RAISE EXCEPTION \'chatsec: app.decryption_keys is not valid JSON\' USING ERRCODE = \'22023\';\n  END;\n  v_key := v_keys ->> p_key_id;\n  IF v_key IS NULL OR v_key = \'\' THEN\n    RAISE EXCEPTION \'chatsec: no key for encryption key id % in this transaction\',\n      pg_catalog.quote_literal(p_key_id)\n      USING ERRCODE = \'28000\', HINT = \'the keyring given to chatsec.app lacks this key\';\n  END IF;\n  RETURN extensions.pgp_sym_decrypt(extensions.dearmor(p_content), v_key);\nEXCEPTION WHEN external_routine_invocation_exception THEN\n  -- pgcrypto says only "Wrong key or corrupt data"; name the key id instead.\n  RAISE EXCEPTION \'chatsec: cannot decrypt message with key %: wrong key for that id or corrupt data\',\n    pg_catalog.quote_literal(p_key_id) USING ERRCODE = \'28000\';\nEND\n$fn$')
    op.execute('REVOKE EXECUTE ON FUNCTION chat.decrypt_message(text,text) FROM PUBLIC')
    op.execute('GRANT EXECUTE ON FUNCTION chat.decrypt_message(text,text) TO app_user')
    op.execute('GRANT EXECUTE ON FUNCTION chat.decrypt_message(text,text) TO chat_key_rotator')
    op.execute("CREATE FUNCTION chat.encryption_summary()\n  RETURNS TABLE(key_id text, rows bigint)\n  LANGUAGE sql\n  STABLE\n  SECURITY DEFINER\n  SET search_path = ''\nAS $fn$\nSELECT m.key_id, pg_catalog.count(*)\n  FROM chat.messages m\n GROUP BY m.key_id\n ORDER BY m.key_id\n$fn$")
    op.execute('REVOKE EXECUTE ON FUNCTION chat.encryption_summary() FROM PUBLIC')
    op.execute('GRANT EXECUTE ON FUNCTION chat.encryption_summary() TO chat_auditor')
    op.execute('GRANT EXECUTE ON FUNCTION chat.encryption_summary() TO chat_key_rotator')
    op.execute('ALTER TABLE chat.encryption_keys ENABLE ROW LEVEL SECURITY')
    op.execute('ALTER TABLE chat.encryption_keys FORCE ROW LEVEL SECURITY')
    op.execute('GRANT SELECT ON TABLE chat.encryption_keys TO app_user')
    op.execute('GRANT SELECT ON TABLE chat.encryption_keys TO chat_auditor')
    op.execute('GRANT SELECT ON TABLE chat.encryption_keys TO chat_key_rotator')
    op.execute('CREATE POLICY encryption_keys_owner_manage ON chat.encryption_keys\n  AS PERMISSIVE\n  FOR ALL\n  TO chat_owner\n  USING (true)\n  WITH CHECK (true)')
    op.execute('CREATE POLICY encryption_keys_read ON chat.encryption_keys\n  AS PERMISSIVE\n  FOR SELECT\n  TO app_user, chat_auditor, chat_key_rotator\n  USING (true)')
    op.execute('GRANT SELECT (content, id, key_id) ON TABLE chat.messages TO chat_key_rotator')
    op.execute('GRANT UPDATE (content) ON TABLE chat.messages TO chat_key_rotator')
    op.execute('CREATE POLICY messages_key_rotator_select ON chat.messages\n  AS PERMISSIVE\n  FOR SELECT\n  TO chat_key_rotator\n  USING (true)')
    op.execute('CREATE POLICY messages_key_rotator_update ON chat.messages\n  AS PERMISSIVE\n  FOR UPDATE\n  TO chat_key_rotator\n  USING (true)\n  WITH CHECK (true)')
    op.execute('CREATE POLICY messages_owner_read ON chat.messages\n  AS PERMISSIVE\n  FOR SELECT\n  TO chat_owner\n  USING (true)')
    # BEFORE triggers fire in name order: "z_" makes encryption the last one, so no
    # later trigger can see or rewrite the plaintext after it was encrypted.
    op.execute(
        "CREATE TRIGGER messages_z_encrypt_content BEFORE INSERT OR UPDATE ON chat.messages "
        "FOR EACH ROW EXECUTE FUNCTION chat.encrypt_message()"
    )
    # Fail closed even without the trigger (dropped or disabled by an owner): a new row
    # must carry a key id and armored ciphertext. NOT VALID: rows from before this
    # revision are plaintext until the first rotation.
    op.execute(
        "ALTER TABLE chat.messages ADD CONSTRAINT messages_content_encrypted "
        "CHECK (key_id IS NOT NULL AND content LIKE '-----BEGIN PGP MESSAGE-----%') NOT VALID"
    )
    # security_invoker: the reader's own privileges and the messages policies apply.
    op.execute(
        """
        CREATE VIEW chat.messages_decrypted WITH (security_invoker = true) AS
        SELECT m.id, m.thread_id, m.user_id,
               chat.decrypt_message(m.content, m.key_id) AS content,
               m.parent_id, m.status, m.metadata, m.created_at, m.updated_at, m.key_id
          FROM chat.messages m
        """
    )
    op.execute("GRANT SELECT ON TABLE chat.messages_decrypted TO app_user")
    op.execute("RESET ROLE")


_REFUSE_CIPHERTEXT = """
DO $$
DECLARE
  v_rows pg_catalog.int8;
BEGIN
  SELECT COALESCE(pg_catalog.sum(s.rows), 0) INTO v_rows
    FROM chat.encryption_summary() s WHERE s.key_id IS NOT NULL;
  IF v_rows > 0 THEN
    RAISE EXCEPTION 'chatsec: % message(s) are encrypted: below revision 0003 they would pass for plaintext; nothing rolled back (only a rollback to base, which drops them, goes below 0003)', v_rows;
  END IF;
END
$$
"""


def downgrade() -> None:
    op.execute("SET LOCAL ROLE chat_owner")
    if context.get_revision_argument() is not None:
        op.execute(_REFUSE_CIPHERTEXT)
    op.execute("DROP VIEW chat.messages_decrypted")
    op.execute("ALTER TABLE chat.messages DROP CONSTRAINT messages_content_encrypted")
    op.execute("DROP TRIGGER messages_z_encrypt_content ON chat.messages")
    op.execute('DROP POLICY messages_owner_read ON chat.messages')
    op.execute('DROP POLICY messages_key_rotator_update ON chat.messages')
    op.execute('DROP POLICY messages_key_rotator_select ON chat.messages')
    op.execute('REVOKE SELECT (content, id, key_id) ON TABLE chat.messages FROM chat_key_rotator')
    op.execute('REVOKE UPDATE (content) ON TABLE chat.messages FROM chat_key_rotator')
    op.execute('DROP POLICY encryption_keys_read ON chat.encryption_keys')
    op.execute('DROP POLICY encryption_keys_owner_manage ON chat.encryption_keys')
    op.execute('REVOKE SELECT ON TABLE chat.encryption_keys FROM chat_key_rotator')
    op.execute('REVOKE SELECT ON TABLE chat.encryption_keys FROM chat_auditor')
    op.execute('REVOKE SELECT ON TABLE chat.encryption_keys FROM app_user')
    op.execute('ALTER TABLE chat.encryption_keys NO FORCE ROW LEVEL SECURITY')
    op.execute('ALTER TABLE chat.encryption_keys DISABLE ROW LEVEL SECURITY')
    op.execute('DROP FUNCTION chat.encryption_summary()')
    op.execute('DROP FUNCTION chat.decrypt_message(text,text)')
    op.execute('DROP FUNCTION chat.encrypt_message()')
    op.execute('REVOKE USAGE ON SCHEMA extensions FROM chat_key_rotator')
    op.execute('REVOKE USAGE ON SCHEMA chat FROM chat_key_rotator')
    op.execute("DROP TABLE chat.encryption_keys")
    op.execute("ALTER TABLE chat.messages DROP COLUMN key_id")
    op.execute("RESET ROLE")

