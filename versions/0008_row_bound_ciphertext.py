"""row-bound ciphertext: no pass-through, key states, verifiers bound to key id and deployment

A ciphertext opens only in its own row (docs/encryption.md): what the trigger encrypts
is a frame naming the message id and thread id, then the text, and
chat.decrypt_message(content, key_id, message_id, thread_id) refuses a frame that
names another row. The trigger no longer keeps armored input that decrypts under a
transaction key: an upsert's own ciphertext (bound to that row) is opened and
encrypted again, anything else is encrypted as text, so pasting another row's
ciphertext shows the paster nothing but that armor.

Written by hand around `chatsec plan`'s SQL for policies/ (between the markers),
because it changes the schema: chat.encryption_keys gains binds_rows (false for the
keys registered before this revision: their rows are not bound yet, and stay readable
until `chatsec keys rotate` rewrites them under a new key), verifier_version (1 for
those keys: `chatsec keys register`/`rotate` upgrade them), drained_at and purged_at;
the one-row table chat.deployment names this deployment in version 2 verifiers and
keeps the newest keyring generation saved for it; the view chat.messages_decrypted is
rebuilt on the new decrypt signature.

Downgrade refuses while rows are under a key that binds rows: the functions of 0007
would show every such message with its 85-character frame in front. A rollback to
base drops the messages too, so it goes ahead.

Generated part, as `chatsec plan` listed it against 0007 with the schema changes above:

- changed function chat.encrypt_message(): body differs
- missing function chat.decrypt_message(text,text,uuid,uuid): function does not exist
- changed rls chat.deployment: row level security disabled, declared enabled
- changed rls chat.deployment: row level security not forced, declared forced
- missing table-grant chat.deployment to app_user: SELECT not granted to app_user
- missing table-grant chat.deployment to chat_auditor: SELECT not granted to chat_auditor
- missing table-grant chat.deployment to chat_key_rotator: SELECT not granted to chat_key_rotator
- missing policy deployment_owner_read on chat.deployment: policy does not exist
- missing policy deployment_owner_update on chat.deployment: policy does not exist
- missing policy deployment_read on chat.deployment: policy does not exist
- missing table-grant chat.messages to chat_key_rotator: SELECT(thread_id) not granted to chat_key_rotator
- extra function chat.decrypt_message(text,text): function is not declared in policies/ (owner chat_owner)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from alembic import context, op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_ROLES = ("app_user", "chat_auditor", "chat_definer", "chat_key_rotator", "chat_owner")

_VIEW = """
CREATE VIEW chat.messages_decrypted WITH (security_invoker = true) AS
SELECT m.id, m.thread_id, m.user_id,
       chat.decrypt_message(m.content, m.key_id, m.id, m.thread_id) AS content,
       m.parent_id, m.status, m.metadata, m.created_at, m.updated_at, m.key_id
  FROM chat.messages m
"""
_VIEW_0007 = """
CREATE VIEW chat.messages_decrypted WITH (security_invoker = true) AS
SELECT m.id, m.thread_id, m.user_id,
       chat.decrypt_message(m.content, m.key_id) AS content,
       m.parent_id, m.status, m.metadata, m.created_at, m.updated_at, m.key_id
  FROM chat.messages m
"""
_REFUSE_BOUND_ROWS = """
DO $$
DECLARE
  v_rows pg_catalog.int8;
BEGIN
  -- As chat_owner, which reads messages only through chat.encryption_summary().
  SELECT COALESCE(pg_catalog.sum(s.rows), 0) INTO v_rows
    FROM chat.encryption_summary() s JOIN chat.encryption_keys k ON k.id = s.key_id
   WHERE k.binds_rows;
  IF v_rows > 0 THEN
    RAISE EXCEPTION 'chatsec: % message(s) are bound to their rows (revision 0008): revision 0007 cannot read them', v_rows;
  END IF;
END
$$
"""


def upgrade() -> None:
    for role in _ROLES:
        op.execute(
            "DO $$\nBEGIN\n  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = "
            f"'{role}') THEN\n    CREATE ROLE {role} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
            f"NOBYPASSRLS NOREPLICATION {'NOINHERIT' if role == 'chat_owner' else 'INHERIT'};"
            "\n  END IF;\nEND\n$$"
        )
    op.execute("SET LOCAL ROLE chat_owner")
    op.execute(
        "ALTER TABLE chat.encryption_keys "
        "ADD COLUMN binds_rows boolean NOT NULL DEFAULT true, "
        "ADD COLUMN verifier_version smallint NOT NULL DEFAULT 2 "
        "CHECK (verifier_version IN (1, 2)), "
        "ADD COLUMN drained_at timestamptz, "
        "ADD COLUMN purged_at timestamptz"
    )
    # Keys from before this revision: their rows are not bound, their verifiers name no
    # key id or deployment. Both stay accepted until a rotation replaces the key.
    op.execute("UPDATE chat.encryption_keys SET binds_rows = false, verifier_version = 1")
    op.execute(
        """
        CREATE TABLE chat.deployment (
          id uuid NOT NULL DEFAULT extensions.uuid_generate_v4(),
          created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
          keyring_generation bigint NOT NULL DEFAULT 0 CHECK (keyring_generation >= 0),
          one_row boolean PRIMARY KEY DEFAULT true CHECK (one_row)
        )
        """
    )
    op.execute("INSERT INTO chat.deployment DEFAULT VALUES")
    op.execute("DROP VIEW chat.messages_decrypted")
    op.execute("RESET ROLE")
    # --- generated by chatsec plan from policies/ ---
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('CREATE OR REPLACE FUNCTION chat.encrypt_message()\n  RETURNS trigger\n  LANGUAGE plpgsql\n  VOLATILE\n  SECURITY INVOKER\n  SET search_path = pg_catalog, pg_temp\nAS $fn$\nDECLARE\n  v_key pg_catalog.text := pg_catalog.current_setting(\'app.encryption_key\', true);\n  v_key_id pg_catalog.text := pg_catalog.current_setting(\'app.encryption_key_id\', true);\n  v_plain pg_catalog.text := NEW.content;\n  v_opened pg_catalog.text;\n  v_frame pg_catalog.text;\n  v_registered chat.encryption_keys%ROWTYPE;\n  v_check pg_catalog.text;\nBEGIN\n  -- Rows from before encryption (key_id NULL) hold plaintext: any update encrypts them.\n  IF TG_OP = \'UPDATE\' AND NEW.content IS NOT DISTINCT FROM OLD.content\n     AND OLD.key_id IS NOT NULL THEN\n    NEW.key_id := OLD.key_id;\n    RETURN NEW;\n  END IF;\n\n  IF v_key IS NULL OR v_key = \'\' THEN\n    RAISE EXCEPTION \'chatsec: no encryption key in this transaction, message not stored\'\n      USING ERRCODE = \'28000\',\n            HINT = \'pass the keyring to chatsec.app.user_transaction (app.encryption_key)\';\n  END IF;\n  SELECT k.* INTO v_registered FROM chat.encryption_keys k WHERE k.id = v_key_id;\n  IF NOT FOUND THEN\n    RAISE EXCEPTION \'chatsec: encryption key id % is not registered, message not stored\',\n      pg_catalog.quote_literal(COALESCE(v_key_id, \'<none>\'))\n      USING ERRCODE = \'28000\', HINT = \'chatsec keys register\';\n  END IF;\n  IF v_registered.retired_at IS NOT NULL THEN\n    RAISE EXCEPTION \'chatsec: encryption key % is retired, message not stored\',\n      pg_catalog.quote_literal(v_key_id) USING ERRCODE = \'28000\';\n  END IF;\n  IF v_registered.drained_at IS NOT NULL THEN\n    RAISE EXCEPTION \'chatsec: encryption key % was rotated out, message not stored\',\n      pg_catalog.quote_literal(v_key_id)\n      USING ERRCODE = \'28000\', HINT = \'give the application the keyring with the new active key\';\n  END IF;\n  -- Version 2 verifiers name the key id and this deployment: one cannot be moved to\n  -- another key id or another chat database.\n  v_check := \'chatsec-key-check\';\n  IF v_registered.verifier_version = 2 THEN\n    v_check := v_check || \':v2:\' || v_key_id || \':\'\n               || (SELECT d.id::pg_catalog.text FROM chat.deployment d);\n  END IF;\n  IF v_registered.verifier IS DISTINCT FROM pg_catalog.encode(\n       extensions.hmac(v_check, v_key, \'sha256\'), \'hex\') THEN\n    RAISE EXCEPTION \'chatsec: wrong key for encryption key id %, message not stored\',\n      pg_catalog.quote_literal(v_key_id) USING ERRCODE = \'28000\';\n  END IF;\n\n  v_frame := pg_catalog.chr(1) || \'chatsec/2 \' || NEW.id::pg_catalog.text || \' \'\n             || NEW.thread_id::pg_catalog.text || pg_catalog.chr(1);\n  -- INSERT ... ON CONFLICT DO UPDATE SET content = EXCLUDED.content hands this UPDATE\n  -- the row its INSERT encrypted a moment ago: its text is encrypted again when that\n  -- ciphertext is bound to this very row. Any other armored text (another row\'s\n  -- ciphertext pasted in included) is text like any other and is encrypted as such:\n  -- nobody can make the database open a ciphertext for them.\n  IF TG_OP = \'UPDATE\' AND v_plain LIKE \'-----BEGIN PGP MESSAGE-----%\' THEN\n    BEGIN\n      v_opened := extensions.pgp_sym_decrypt(extensions.dearmor(v_plain), v_key);\n      IF pg_catalog.left(v_opened, 85) = v_frame THEN\n        v_plain := pg_catalog.substr(v_opened, 86);\n      END IF;\n    EXCEPTION\n      -- pgcrypto\'s "Corrupt ascii-armor" / "Wrong key or corrupt data": not ours.\n      WHEN external_routine_invocation_exception THEN\n        NULL;\n    END;\n  END IF;\n\n  -- Keys are 256 random bits, not passphrases: s2k-mode=1 (salted, not iterated),\n  -- since stretching only slows down guessing a low-entropy secret.\n  NEW.content := extensions.armor(\n    extensions.pgp_sym_encrypt(v_frame || v_plain, v_key, \'cipher-algo=aes256, s2k-mode=1\'),\n    ARRAY[\'Chatsec-Key\'], ARRAY[v_key_id]);\n  NEW.key_id := v_key_id;\n  -- A rotation rewrites ciphertext only: the message itself was not edited.\n  IF TG_OP = \'UPDATE\' AND CURRENT_USER = \'chat_key_rotator\' THEN\n    NEW.updated_at := OLD.updated_at;\n  END IF;\n  RETURN NEW;\nEND\n$fn$')
    op.execute('CREATE FUNCTION chat.decrypt_message(p_content text, p_key_id text, p_message_id uuid, p_thread_id uuid)\n  RETURNS text\n  LANGUAGE plpgsql\n  STABLE\n  SECURITY INVOKER\n  SET search_path = pg_catalog, pg_temp\nAS $fn$\nDECLARE\n  v_key pg_catalog.text;\n  v_plain pg_catalog.text;\n  v_binds pg_catalog.bool;\nBEGIN\n  IF p_content IS NULL THEN\n    RETURN NULL;\n  END IF;\n  IF p_key_id IS NULL THEN\n    -- Written before encryption was deployed and not yet rotated: still plaintext.\n    RETURN p_content;\n  END IF;\n  v_key := NULLIF(pg_catalog.current_setting(\'app.decryption_keys\', true), \'\')::pg_catalog.jsonb\n           ->> p_key_id;\n  IF v_key IS NULL OR v_key = \'\' THEN\n    RAISE WARNING \'chatsec: message % is not shown: no key % in this transaction\',\n      p_message_id, pg_catalog.quote_literal(p_key_id)\n      USING HINT = \'the keyring lacks it, or it is retired (chatsec keys unretire)\';\n    RETURN NULL;\n  END IF;\n  BEGIN\n    v_plain := extensions.pgp_sym_decrypt(extensions.dearmor(p_content), v_key);\n  EXCEPTION WHEN external_routine_invocation_exception THEN\n    -- pgcrypto says only "Wrong key or corrupt data"; name the message and key instead.\n    RAISE WARNING \'chatsec: message % is not shown: wrong key for key id % or corrupt data\',\n      p_message_id, pg_catalog.quote_literal(p_key_id);\n    RETURN NULL;\n  END;\n  IF pg_catalog.left(v_plain, 85) = pg_catalog.chr(1) || \'chatsec/2 \'\n       || p_message_id::pg_catalog.text || \' \' || p_thread_id::pg_catalog.text\n       || pg_catalog.chr(1) THEN\n    RETURN pg_catalog.substr(v_plain, 86);\n  END IF;\n  IF pg_catalog.left(v_plain, 11) <> pg_catalog.chr(1) || \'chatsec/2 \' THEN\n    SELECT k.binds_rows INTO v_binds FROM chat.encryption_keys k WHERE k.id = p_key_id;\n    IF v_binds IS NOT DISTINCT FROM false THEN\n      RETURN v_plain;\n    END IF;\n  END IF;\n  RAISE WARNING \'chatsec: message % is not shown: its ciphertext belongs to another message\',\n    p_message_id;\n  RETURN NULL;\nEND\n$fn$')
    op.execute('REVOKE EXECUTE ON FUNCTION chat.decrypt_message(text,text,uuid,uuid) FROM PUBLIC')
    op.execute('GRANT EXECUTE ON FUNCTION chat.decrypt_message(text,text,uuid,uuid) TO app_user')
    op.execute('GRANT EXECUTE ON FUNCTION chat.decrypt_message(text,text,uuid,uuid) TO chat_key_rotator')
    op.execute('ALTER TABLE chat.deployment ENABLE ROW LEVEL SECURITY')
    op.execute('ALTER TABLE chat.deployment FORCE ROW LEVEL SECURITY')
    op.execute('GRANT SELECT ON TABLE chat.deployment TO app_user')
    op.execute('GRANT SELECT ON TABLE chat.deployment TO chat_auditor')
    op.execute('GRANT SELECT ON TABLE chat.deployment TO chat_key_rotator')
    op.execute('CREATE POLICY deployment_owner_read ON chat.deployment\n  AS PERMISSIVE\n  FOR SELECT\n  TO chat_owner\n  USING (true)')
    op.execute('CREATE POLICY deployment_owner_update ON chat.deployment\n  AS PERMISSIVE\n  FOR UPDATE\n  TO chat_owner\n  USING (true)\n  WITH CHECK (true)')
    op.execute('CREATE POLICY deployment_read ON chat.deployment\n  AS PERMISSIVE\n  FOR SELECT\n  TO app_user, chat_auditor, chat_key_rotator\n  USING (true)')
    op.execute('GRANT SELECT (thread_id) ON TABLE chat.messages TO chat_key_rotator')
    op.execute('DROP FUNCTION chat.decrypt_message(text,text)')
    op.execute('RESET ROLE')
    # --- end of generated part ---
    op.execute("SET LOCAL ROLE chat_owner")
    op.execute(_VIEW)
    op.execute("GRANT SELECT ON TABLE chat.messages_decrypted TO app_user")
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute("SET LOCAL ROLE chat_owner")
    if context.get_revision_argument() is not None:
        op.execute(_REFUSE_BOUND_ROWS)
    op.execute("DROP VIEW chat.messages_decrypted")
    op.execute("RESET ROLE")
    # --- generated by chatsec plan from policies/ ---
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('CREATE OR REPLACE FUNCTION chat.decrypt_message(p_content text, p_key_id text)\n RETURNS text\n LANGUAGE plpgsql\n STABLE\n SET search_path TO \'pg_catalog\', \'pg_temp\'\nAS $function$\nDECLARE\n  v_keys pg_catalog.jsonb;\n  v_key pg_catalog.text;\nBEGIN\n  IF p_content IS NULL THEN\n    RETURN NULL;\n  END IF;\n  IF p_key_id IS NULL THEN\n    -- Written before encryption was deployed and not yet rotated: still plaintext.\n    RETURN p_content;\n  END IF;\n  BEGIN\n    v_keys := NULLIF(pg_catalog.current_setting(\'app.decryption_keys\', true), \'\')::pg_catalog.jsonb;\n  EXCEPTION WHEN invalid_text_representation THEN\n    RAISE EXCEPTION \'chatsec: app.decryption_keys is not valid JSON\' USING ERRCODE = \'22023\';\n  END;\n  v_key := v_keys ->> p_key_id;\n  IF v_key IS NULL OR v_key = \'\' THEN\n    RAISE EXCEPTION \'chatsec: no key for encryption key id % in this transaction\',\n      pg_catalog.quote_literal(p_key_id)\n      USING ERRCODE = \'28000\', HINT = \'the keyring given to chatsec.app lacks this key\';\n  END IF;\n  RETURN extensions.pgp_sym_decrypt(extensions.dearmor(p_content), v_key);\nEXCEPTION WHEN external_routine_invocation_exception THEN\n  -- pgcrypto says only "Wrong key or corrupt data"; name the key id instead.\n  RAISE EXCEPTION \'chatsec: cannot decrypt message with key %: wrong key for that id or corrupt data\',\n    pg_catalog.quote_literal(p_key_id) USING ERRCODE = \'28000\';\nEND\n$function$\n')
    op.execute('REVOKE EXECUTE ON FUNCTION chat.decrypt_message(text,text) FROM PUBLIC')
    op.execute('GRANT EXECUTE ON FUNCTION chat.decrypt_message(text,text) TO app_user')
    op.execute('GRANT EXECUTE ON FUNCTION chat.decrypt_message(text,text) TO chat_key_rotator')
    op.execute('REVOKE SELECT (thread_id) ON TABLE chat.messages FROM chat_key_rotator')
    op.execute('DROP POLICY deployment_read ON chat.deployment')
    op.execute('DROP POLICY deployment_owner_update ON chat.deployment')
    op.execute('DROP POLICY deployment_owner_read ON chat.deployment')
    op.execute('REVOKE SELECT ON TABLE chat.deployment FROM chat_key_rotator')
    op.execute('REVOKE SELECT ON TABLE chat.deployment FROM chat_auditor')
    op.execute('REVOKE SELECT ON TABLE chat.deployment FROM app_user')
    op.execute('ALTER TABLE chat.deployment NO FORCE ROW LEVEL SECURITY')
    op.execute('ALTER TABLE chat.deployment DISABLE ROW LEVEL SECURITY')
    op.execute('DROP FUNCTION chat.decrypt_message(text,text,uuid,uuid)')
    op.execute('CREATE OR REPLACE FUNCTION chat.encrypt_message()\n RETURNS trigger\n LANGUAGE plpgsql\n SET search_path TO \'pg_catalog\', \'pg_temp\'\nAS $function$\nDECLARE\n  v_key pg_catalog.text := pg_catalog.current_setting(\'app.encryption_key\', true);\n  v_key_id pg_catalog.text := pg_catalog.current_setting(\'app.encryption_key_id\', true);\n  v_header_id pg_catalog.text;\n  v_header_key pg_catalog.text;\n  v_verifier pg_catalog.text;\n  v_retired pg_catalog.timestamptz;\nBEGIN\n  -- Rows from before encryption (key_id NULL) hold plaintext: any update encrypts them.\n  IF TG_OP = \'UPDATE\' AND NEW.content IS NOT DISTINCT FROM OLD.content\n     AND OLD.key_id IS NOT NULL THEN\n    NEW.key_id := OLD.key_id;\n    RETURN NEW;\n  END IF;\n\n  -- Already our ciphertext (INSERT ... ON CONFLICT DO UPDATE SET content = EXCLUDED.content\n  -- hands the UPDATE the row the INSERT trigger encrypted): keep it, once it is proven to\n  -- decrypt with this transaction\'s registered key for the id in its armor header.\n  IF NEW.content LIKE \'-----BEGIN PGP MESSAGE-----%\' THEN\n    BEGIN\n      SELECT h.value INTO v_header_id\n        FROM extensions.pgp_armor_headers(NEW.content) h\n       WHERE h.key = \'Chatsec-Key\';\n      IF v_header_id = v_key_id THEN\n        v_header_key := v_key;\n      ELSE\n        v_header_key := NULLIF(pg_catalog.current_setting(\'app.decryption_keys\', true), \'\')::pg_catalog.jsonb\n                        ->> v_header_id;\n      END IF;\n      IF v_header_key IS NOT NULL AND v_header_key <> \'\' AND EXISTS (\n           SELECT 1 FROM chat.encryption_keys k\n            WHERE k.id = v_header_id AND k.retired_at IS NULL\n              AND k.verifier = pg_catalog.encode(\n                    extensions.hmac(\'chatsec-key-check\'::pg_catalog.text, v_header_key, \'sha256\'), \'hex\'))\n      THEN\n        PERFORM extensions.pgp_sym_decrypt(extensions.dearmor(NEW.content), v_header_key);\n        NEW.key_id := v_header_id;\n        RETURN NEW;\n      END IF;\n    EXCEPTION\n      -- pgcrypto\'s "Corrupt ascii-armor" / "Wrong key or corrupt data", or bad JSON:\n      -- then it is not our ciphertext, and it is encrypted below like any text.\n      WHEN external_routine_invocation_exception OR invalid_text_representation THEN\n        NULL;\n    END;\n  END IF;\n\n  IF v_key IS NULL OR v_key = \'\' THEN\n    RAISE EXCEPTION \'chatsec: no encryption key in this transaction, message not stored\'\n      USING ERRCODE = \'28000\',\n            HINT = \'pass the keyring to chatsec.app.user_transaction (app.encryption_key)\';\n  END IF;\n  SELECT k.verifier, k.retired_at INTO v_verifier, v_retired\n    FROM chat.encryption_keys k WHERE k.id = v_key_id;\n  IF NOT FOUND THEN\n    RAISE EXCEPTION \'chatsec: encryption key id % is not registered, message not stored\',\n      pg_catalog.quote_literal(COALESCE(v_key_id, \'<none>\'))\n      USING ERRCODE = \'28000\', HINT = \'chatsec keys register\';\n  END IF;\n  IF v_retired IS NOT NULL THEN\n    RAISE EXCEPTION \'chatsec: encryption key % is retired, message not stored\',\n      pg_catalog.quote_literal(v_key_id) USING ERRCODE = \'28000\';\n  END IF;\n  IF v_verifier <> pg_catalog.encode(\n       extensions.hmac(\'chatsec-key-check\'::pg_catalog.text, v_key, \'sha256\'), \'hex\') THEN\n    RAISE EXCEPTION \'chatsec: wrong key for encryption key id %, message not stored\',\n      pg_catalog.quote_literal(v_key_id) USING ERRCODE = \'28000\';\n  END IF;\n\n  -- Keys are 256 random bits, not passphrases: s2k-mode=1 (salted, not iterated),\n  -- since stretching only slows down guessing a low-entropy secret.\n  NEW.content := extensions.armor(\n    extensions.pgp_sym_encrypt(NEW.content, v_key, \'cipher-algo=aes256, s2k-mode=1\'),\n    ARRAY[\'Chatsec-Key\'], ARRAY[v_key_id]);\n  NEW.key_id := v_key_id;\n  -- A rotation rewrites ciphertext only: the message itself was not edited.\n  IF TG_OP = \'UPDATE\' AND CURRENT_USER = \'chat_key_rotator\' THEN\n    NEW.updated_at := OLD.updated_at;\n  END IF;\n  RETURN NEW;\nEND\n$function$\n')
    op.execute('RESET ROLE')
    # --- end of generated part ---
    op.execute("SET LOCAL ROLE chat_owner")
    op.execute(_VIEW_0007)
    op.execute("GRANT SELECT ON TABLE chat.messages_decrypted TO app_user")
    op.execute("DROP TABLE chat.deployment")
    op.execute(
        "ALTER TABLE chat.encryption_keys DROP COLUMN binds_rows, DROP COLUMN verifier_version, "
        "DROP COLUMN drained_at, DROP COLUMN purged_at"
    )
    op.execute("RESET ROLE")
