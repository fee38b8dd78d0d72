"""hardening: no shadowable names, definers as chat_definer, nothing kept between requests, private profiles, thread roles

The application login, holding hostile SQL, must not run code as another role, keep
anything past its transaction, store data outside row-level security, read another
user's private columns or take over a thread (docs/threat-model.md). Written by hand
around `chatsec plan`'s SQL for policies/ (the part between the markers below),
because it also creates a view, a trigger and checks what only the database knows:

- every function: search_path `pg_catalog, pg_temp` and schema-qualified types
  (`search_path = ''` searched the caller's temporary schema first);
- the SECURITY DEFINER helpers, and the view chat.user_profiles, owned by the new
  NOLOGIN role chat_definer, which reads only the columns they read; the *_owner_read
  policies of chat_owner are gone;
- chat.users shows each user only their own row; contacts see the public profile
  through chat.user_profiles (security_barrier);
- thread role invariants: new participants policies and the trigger
  thread_participants_keep_an_owner;
- the database: PUBLIC gets nothing, app_user and its logins only CONNECT (no
  TEMPORARY, no CREATE); the auditor keeps TEMPORARY for `chatsec plan`;
- large-object functions must not be executable by app_user: a superuser closes
  them with `chatsec harden-database` (or this revision does, when the migrator is one).

Downgrade restores 0006's policies, functions and owners and gives app_user TEMPORARY
back; PUBLIC stays closed. Role chat_definer and the migrator's membership in it stay:
roles are cluster-wide and other databases of the cluster may use them.

Generated part, as `chatsec plan` listed it against 0006:

- missing schema-grant chat to chat_definer: USAGE not granted to chat_definer
- changed function chat.set_updated_at(): search_path '', declared 'pg_catalog, pg_temp'
- changed function chat.current_user_id(): search_path '', declared 'pg_catalog, pg_temp'; body differs
- missing function-grant chat.current_user_id() to chat_definer: EXECUTE not granted to chat_definer
- changed function chat.my_thread_ids(): search_path '', declared 'pg_catalog, pg_temp'
- changed function chat.my_thread_ids(): owner chat_owner, declared chat_definer
- changed function chat.my_admin_thread_ids(): search_path '', declared 'pg_catalog, pg_temp'
- changed function chat.my_admin_thread_ids(): owner chat_owner, declared chat_definer
- changed function chat.my_claimable_thread_ids(): search_path '', declared 'pg_catalog, pg_temp'
- changed function chat.my_claimable_thread_ids(): owner chat_owner, declared chat_definer
- changed function chat.my_memberships(): search_path '', declared 'pg_catalog, pg_temp'; body differs
- changed function chat.my_memberships(): owner chat_owner, declared chat_definer
- changed function chat.encrypt_message(): search_path '', declared 'pg_catalog, pg_temp'; body differs
- changed function chat.decrypt_message(text,text): search_path '', declared 'pg_catalog, pg_temp'; body differs
- changed function chat.encryption_summary(): search_path '', declared 'pg_catalog, pg_temp'
- changed function chat.encryption_summary(): owner chat_owner, declared chat_definer
- missing function-grant chat.encryption_summary() to chat_owner: EXECUTE not granted to chat_owner
- changed function chat.my_thread_counts(uuid[]): search_path '', declared 'pg_catalog, pg_temp'; body differs
- changed function chat.my_thread_counts(uuid[]): owner chat_owner, declared chat_definer
- missing function chat.keep_an_owner(): function does not exist
- extra default-privilege functions of chat_definer to PUBLIC: EXECUTE granted to PUBLIC, not declared
- missing table-grant chat.messages to chat_definer: SELECT(created_at, key_id, thread_id) not granted to chat_definer
- missing policy messages_definer_read on chat.messages: policy does not exist
- extra policy messages_owner_read on chat.messages: policy is not declared in policies/ (PERMISSIVE FOR SELECT TO chat_owner USING true WITH CHECK None)
- missing table-grant chat.thread_participants to chat_definer: SELECT(last_read_at, role, thread_id, user_id) not granted to chat_definer
- missing policy participants_definer_read on chat.thread_participants: policy does not exist
- missing policy participants_delete_by_role_or_self on chat.thread_participants: policy does not exist
- missing policy participants_insert_by_role on chat.thread_participants: policy does not exist
- missing policy participants_update_owner on chat.thread_participants: policy does not exist
- extra policy participants_delete_admin_or_self on chat.thread_participants: policy is not declared in policies/ (PERMISSIVE FOR DELETE TO app_user USING ((user_id = ( SELECT chat.current_user_id() AS current_user_id)) OR (thread_id IN ( SELECT chat.my_admin_thread_ids() AS my_admin_thread_ids))) WITH CHECK None)
- extra policy participants_insert_admin on chat.thread_participants: policy is not declared in policies/ (PERMISSIVE FOR INSERT TO app_user USING None WITH CHECK (thread_id IN ( SELECT chat.my_admin_thread_ids() AS my_admin_thread_ids)))
- extra policy participants_owner_read on chat.thread_participants: policy is not declared in policies/ (PERMISSIVE FOR SELECT TO chat_owner USING true WITH CHECK None)
- extra policy participants_update_admin on chat.thread_participants: policy is not declared in policies/ (PERMISSIVE FOR UPDATE TO app_user USING (thread_id IN ( SELECT chat.my_admin_thread_ids() AS my_admin_thread_ids)) WITH CHECK (thread_id IN ( SELECT chat.my_admin_thread_ids() AS my_admin_thread_ids)))
- missing table-grant chat.threads to chat_definer: SELECT(created_by, id) not granted to chat_definer
- missing policy threads_definer_read on chat.threads: policy does not exist
- extra policy threads_owner_read on chat.threads: policy is not declared in policies/ (PERMISSIVE FOR SELECT TO chat_owner USING true WITH CHECK None)
- missing table-grant chat.users to chat_definer: SELECT(first_name, id, last_name, profile_image, username) not granted to chat_definer
- missing policy users_definer_read on chat.users: policy does not exist
- missing policy users_select_self on chat.users: policy does not exist
- extra policy users_select_self_or_contact on chat.users: policy is not declared in policies/ (PERMISSIVE FOR SELECT TO app_user USING ((id = ( SELECT chat.current_user_id() AS current_user_id)) OR (EXISTS ( SELECT 1
   FROM chat.thread_participants p
  WHERE ((p.user_id = users.id) AND (p.thread_id IN ( SELECT chat.my_thread_ids() AS my_thread_ids)))))) WITH CHECK None)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ROLES = ("app_user", "chat_auditor", "chat_definer", "chat_key_rotator", "chat_owner")

# Runs as the migrator (the database's owner). PUBLIC keeps nothing; app_user and every
# login that is a member of it lose TEMPORARY and CREATE, however they got them.
_CLOSE_DATABASE = """
DO $$
DECLARE
  v_db pg_catalog.text := pg_catalog.current_database();
  v_role pg_catalog.text;
BEGIN
  EXECUTE pg_catalog.format('REVOKE ALL ON DATABASE %I FROM PUBLIC', v_db);
  FOR v_role IN
    WITH RECURSIVE members(oid) AS (
        SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = 'app_user'
      UNION
        SELECT m.member FROM pg_catalog.pg_auth_members m JOIN members ON m.roleid = members.oid
    )
    SELECT r.rolname FROM pg_catalog.pg_roles r JOIN members USING (oid)
  LOOP
    EXECUTE pg_catalog.format('REVOKE TEMPORARY, CREATE ON DATABASE %I FROM %I', v_db, v_role);
  END LOOP;
  EXECUTE pg_catalog.format('GRANT CONNECT ON DATABASE %I TO app_user', v_db);
  EXECUTE pg_catalog.format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO chat_auditor', v_db);
  -- REVOKE by someone who is not the grantor only warns: verify. Superusers are
  -- app-user-attributes' finding (they bypass everything anyway).
  SELECT pg_catalog.string_agg(r.rolname, ', ' ORDER BY r.rolname) INTO v_role
    FROM pg_catalog.pg_roles r
   WHERE NOT r.rolsuper
     AND pg_catalog.pg_has_role(r.oid, 'app_user', 'USAGE')
     AND pg_catalog.has_database_privilege(r.oid, v_db, 'TEMPORARY');
  IF v_role IS NOT NULL THEN
    RAISE EXCEPTION 'chatsec: % can still create temporary objects in database % (the migrator must own the database to revoke it)', v_role, v_db;
  END IF;
END
$$
"""

# Large objects are storage outside RLS and encryption. Their functions belong to the
# bootstrap superuser: only a superuser can close them (chatsec harden-database).
_CLOSE_LARGE_OBJECTS = r"""
DO $$
DECLARE
  v_open pg_catalog.text;
  v_fn pg_catalog.regprocedure;
BEGIN
  IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER) THEN
    FOR v_fn IN
      SELECT p.oid FROM pg_catalog.pg_proc p
       WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
         AND (p.proname LIKE 'lo\_%' OR p.proname IN ('loread', 'lowrite'))
    LOOP
      EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', v_fn);
    END LOOP;
  END IF;
  SELECT pg_catalog.string_agg(p.proname, ', ' ORDER BY p.proname) INTO v_open
    FROM pg_catalog.pg_proc p
   WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
     AND (p.proname LIKE 'lo\_%' OR p.proname IN ('loread', 'lowrite'))
     AND pg_catalog.has_function_privilege('app_user', p.oid, 'EXECUTE');
  IF v_open IS NOT NULL THEN
    RAISE EXCEPTION 'chatsec: app_user may use large objects (storage outside row-level security and encryption) in database %: a superuser must run `chatsec harden-database` on it first (it revokes %)', pg_catalog.current_database(), v_open;
  END IF;
END
$$
"""

# security_barrier: a caller's function in WHERE cannot see rows the view's own WHERE
# removes. Not security_invoker: it reads chat.users as its owner, chat_definer, which
# may read only these columns; functions in it still run with the caller's rights.
_USER_PROFILES = """
CREATE VIEW chat.user_profiles WITH (security_barrier = true) AS
SELECT u.id, u.username, u.first_name, u.last_name, u.profile_image
  FROM chat.users u
 WHERE u.id = (SELECT chat.current_user_id())
    OR EXISTS (SELECT 1 FROM chat.thread_participants p
                WHERE p.user_id = u.id AND p.thread_id IN (SELECT chat.my_thread_ids()))
"""


def upgrade() -> None:
    for role in _ROLES:
        op.execute(
            "DO $$\nBEGIN\n  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = "
            f"'{role}') THEN\n    CREATE ROLE {role} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
            f"NOBYPASSRLS NOREPLICATION {'NOINHERIT' if role == 'chat_owner' else 'INHERIT'};"
            "\n  END IF;\nEND\n$$"
        )
    # The migrator hands objects to and from chat_definer (ALTER ... OWNER needs
    # membership in both owners). Cluster-wide: never revoked by a downgrade.
    op.execute("GRANT chat_definer TO CURRENT_USER")
    # --- generated by chatsec plan from policies/ ---
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('GRANT USAGE ON SCHEMA chat TO chat_definer')
    op.execute('CREATE OR REPLACE FUNCTION chat.set_updated_at()\n  RETURNS trigger\n  LANGUAGE plpgsql\n  VOLATILE\n  SECURITY INVOKER\n  SET search_path = pg_catalog, pg_temp\nAS $fn$\nBEGIN\n  NEW.updated_at := pg_catalog.now();\n  RETURN NEW;\nEND\n$fn$')
    op.execute("CREATE OR REPLACE FUNCTION chat.current_user_id()\n  RETURNS uuid\n  LANGUAGE sql\n  STABLE\n  SECURITY INVOKER\n  SET search_path = pg_catalog, pg_temp\nAS $fn$\nSELECT NULLIF(pg_catalog.current_setting('app.user_id', true), '')::pg_catalog.uuid\n$fn$")
    op.execute('GRANT EXECUTE ON FUNCTION chat.current_user_id() TO chat_definer')
    op.execute('CREATE OR REPLACE FUNCTION chat.my_thread_ids()\n  RETURNS SETOF uuid\n  LANGUAGE plpgsql\n  STABLE\n  SECURITY DEFINER\n  SET search_path = pg_catalog, pg_temp\nAS $fn$\nBEGIN\n  RETURN QUERY\n  SELECT tp.thread_id\n    FROM chat.thread_participants tp\n   WHERE tp.user_id = chat.current_user_id();\nEND\n$fn$')
    op.execute('GRANT CREATE ON SCHEMA chat TO chat_definer')
    op.execute('RESET ROLE')
    op.execute('ALTER FUNCTION chat.my_thread_ids() OWNER TO chat_definer')
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('REVOKE CREATE ON SCHEMA chat FROM chat_definer')
    op.execute("CREATE OR REPLACE FUNCTION chat.my_admin_thread_ids()\n  RETURNS SETOF uuid\n  LANGUAGE sql\n  STABLE\n  SECURITY DEFINER\n  SET search_path = pg_catalog, pg_temp\nAS $fn$\nSELECT tp.thread_id\n  FROM chat.thread_participants tp\n WHERE tp.user_id = chat.current_user_id()\n   AND tp.role IN ('owner', 'admin')\n$fn$")
    op.execute('GRANT CREATE ON SCHEMA chat TO chat_definer')
    op.execute('RESET ROLE')
    op.execute('ALTER FUNCTION chat.my_admin_thread_ids() OWNER TO chat_definer')
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('REVOKE CREATE ON SCHEMA chat FROM chat_definer')
    op.execute('CREATE OR REPLACE FUNCTION chat.my_claimable_thread_ids()\n  RETURNS SETOF uuid\n  LANGUAGE sql\n  STABLE\n  SECURITY DEFINER\n  SET search_path = pg_catalog, pg_temp\nAS $fn$\nSELECT t.id\n  FROM chat.threads t\n WHERE t.created_by = chat.current_user_id()\n   AND NOT EXISTS (SELECT 1 FROM chat.thread_participants tp WHERE tp.thread_id = t.id)\n$fn$')
    op.execute('GRANT CREATE ON SCHEMA chat TO chat_definer')
    op.execute('RESET ROLE')
    op.execute('ALTER FUNCTION chat.my_claimable_thread_ids() OWNER TO chat_definer')
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('REVOKE CREATE ON SCHEMA chat FROM chat_definer')
    op.execute('CREATE OR REPLACE FUNCTION chat.my_memberships()\n  RETURNS TABLE(thread_id uuid, role text)\n  LANGUAGE sql\n  STABLE\n  SECURITY DEFINER\n  SET search_path = pg_catalog, pg_temp\nAS $fn$\nSELECT tp.thread_id, tp.role::pg_catalog.text\n  FROM chat.thread_participants tp\n WHERE tp.user_id = chat.current_user_id()\n$fn$')
    op.execute('GRANT CREATE ON SCHEMA chat TO chat_definer')
    op.execute('RESET ROLE')
    op.execute('ALTER FUNCTION chat.my_memberships() OWNER TO chat_definer')
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('REVOKE CREATE ON SCHEMA chat FROM chat_definer')
    op.execute('CREATE OR REPLACE FUNCTION chat.encrypt_message()\n  RETURNS trigger\n  LANGUAGE plpgsql\n  VOLATILE\n  SECURITY INVOKER\n  SET search_path = pg_catalog, pg_temp\nAS $fn$\nDECLARE\n  v_key pg_catalog.text := pg_catalog.current_setting(\'app.encryption_key\', true);\n  v_key_id pg_catalog.text := pg_catalog.current_setting(\'app.encryption_key_id\', true);\n  v_header_id pg_catalog.text;\n  v_header_key pg_catalog.text;\n  v_verifier pg_catalog.text;\n  v_retired pg_catalog.timestamptz;\nBEGIN\n  -- Rows from before encryption (key_id NULL) hold plaintext: any update encrypts them.\n  IF TG_OP = \'UPDATE\' AND NEW.content IS NOT DISTINCT FROM OLD.content\n     AND OLD.key_id IS NOT NULL THEN\n    NEW.key_id := OLD.key_id;\n    RETURN NEW;\n  END IF;\n\n  -- Already our ciphertext (INSERT ... ON CONFLICT DO UPDATE SET content = EXCLUDED.content\n  -- hands the UPDATE the row the INSERT trigger encrypted): keep it, once it is proven to\n  -- decrypt with this transaction\'s registered key for the id in its armor header.\n  IF NEW.content LIKE \'-----BEGIN PGP MESSAGE-----%\' THEN\n    BEGIN\n      SELECT h.value INTO v_header_id\n        FROM extensions.pgp_armor_headers(NEW.content) h\n       WHERE h.key = \'Chatsec-Key\';\n      IF v_header_id = v_key_id THEN\n        v_header_key := v_key;\n      ELSE\n        v_header_key := NULLIF(pg_catalog.current_setting(\'app.decryption_keys\', true), \'\')::pg_catalog.jsonb\n                        ->> v_header_id;\n      END IF;\n      IF v_header_key IS NOT NULL AND v_header_key <> \'\' AND EXISTS (\n           SELECT 1 FROM chat.encryption_keys k\n            WHERE k.id = v_header_id AND k.retired_at IS NULL\n              AND k.verifier = pg_catalog.encode(\n                    extensions.hmac(\'chatsec-key-check\'::pg_catalog.text, v_header_key, \'sha256\'), \'hex\'))\n      THEN\n        PERFORM extensions.pgp_sym_decrypt(extensions.dearmor(NEW.content), v_header_key);\n        NEW.key_id := v_header_id;\n        RETURN NEW;\n      END IF;\n    EXCEPTION\n      -- pgcrypto\'s "Corrupt ascii-armor" / "Wrong key or corrupt data", or bad JSON:\n      -- then it is not our ciphertext, and it is encrypted below like any text.\n      WHEN external_routine_invocation_exception OR invalid_text_representation THEN\n        NULL;\n    END;\n  END IF;\n\n  IF v_key IS NULL OR v_key = \'\' THEN\n    RAISE EXCEPTION \'chatsec: no encryption key in this transaction, message not stored\'\n      USING ERRCODE = \'28000\',\n            HINT = \'pass the keyring to chatsec.app.user_transaction (app.encryption_key)\';\n  END IF;\n  SELECT k.verifier, k.retired_at INTO v_verifier, v_retired\n    FROM chat.encryption_keys k WHERE k.id = v_key_id;\n  IF NOT FOUND THEN\n    RAISE EXCEPTION \'chatsec: encryption key id % is not registered, message not stored\',\n      pg_catalog.quote_literal(COALESCE(v_key_id, \'<none>\'))\n      USING ERRCODE = \'28000\', HINT = \'chatsec keys register\';\n  END IF;\n  IF v_retired IS NOT NULL THEN\n    RAISE EXCEPTION \'chatsec: encryption key % is retired, message not stored\',\n      pg_catalog.quote_literal(v_key_id) USING ERRCODE = \'28000\';\n  END IF;\n  IF v_verifier <> pg_catalog.encode(\n       extensions.hmac(\'chatsec-key-check\'::pg_catalog.text, v_key, \'sha256\'), \'hex\') THEN\n    RAISE EXCEPTION \'chatsec: wrong key for encryption key id %, message not stored\',\n      pg_catalog.quote_literal(v_key_id) USING ERRCODE = \'28000\';\n  END IF;\n\n  -- Keys are 256 random bits, not passphrases: s2k-mode=1 (salted, not iterated),\n  -- since stretching only slows down guessing a low-entropy secret.\n  NEW.content := extensions.armor(\n    extensions.pgp_sym_encrypt(NEW.content, v_key, \'cipher-algo=aes256, s2k-mode=1\'),\n    ARRAY[\'Chatsec-Key\'], ARRAY[v_key_id]);\n  NEW.key_id := v_key_id;\n  -- A rotation rewrites ciphertext only: the message itself was not edited.\n  IF TG_OP = \'UPDATE\' AND CURRENT_USER = \'chat_key_rotator\' THEN\n    NEW.updated_at := OLD.updated_at;\n  END IF;\n  RETURN NEW;\nEND\n$fn$')
    op.execute('CREATE OR REPLACE FUNCTION chat.decrypt_message(p_content text, p_key_id text)\n  RETURNS text\n  LANGUAGE plpgsql\n  STABLE\n  SECURITY INVOKER\n  SET search_path = pg_catalog, pg_temp\nAS $fn$\nDECLARE\n  v_keys pg_catalog.jsonb;\n  v_key pg_catalog.text;\nBEGIN\n  IF p_content IS NULL THEN\n    RETURN NULL;\n  END IF;\n  IF p_key_id IS NULL THEN\n    -- Written before encryption was deployed and not yet rotated: still plaintext.\n    RETURN p_content;\n  END IF;\n  BEGIN\n    v_keys := NULLIF(pg_catalog.current_setting(\'app.decryption_keys\', true), \'\')::pg_catalog.jsonb;\n  EXCEPTION WHEN invalid_text_representation THEN\n    RAISE EXCEPTION \'chatsec: app.decryption_keys is not valid JSON\' USING ERRCODE = \'22023\';\n  END;\n  v_key := v_keys ->> p_key_id;\n  IF v_key IS NULL OR v_key = \'\' THEN\n    RAISE EXCEPTION \'chatsec: no key for encryption key id % in this transaction\',\n      pg_catalog.quote_literal(p_key_id)\n      USING ERRCODE = \'28000\', HINT = \'the keyring given to chatsec.app lacks this key\';\n  END IF;\n  RETURN extensions.pgp_sym_decrypt(extensions.dearmor(p_content), v_key);\nEXCEPTION WHEN external_routine_invocation_exception THEN\n  -- pgcrypto says only "Wrong key or corrupt data"; name the key id instead.\n  RAISE EXCEPTION \'chatsec: cannot decrypt message with key %: wrong key for that id or corrupt data\',\n    pg_catalog.quote_literal(p_key_id) USING ERRCODE = \'28000\';\nEND\n$fn$')
    op.execute('CREATE OR REPLACE FUNCTION chat.encryption_summary()\n  RETURNS TABLE(key_id text, rows bigint)\n  LANGUAGE sql\n  STABLE\n  SECURITY DEFINER\n  SET search_path = pg_catalog, pg_temp\nAS $fn$\nSELECT m.key_id, pg_catalog.count(*)\n  FROM chat.messages m\n GROUP BY m.key_id\n ORDER BY m.key_id\n$fn$')
    op.execute('GRANT CREATE ON SCHEMA chat TO chat_definer')
    op.execute('RESET ROLE')
    op.execute('ALTER FUNCTION chat.encryption_summary() OWNER TO chat_definer')
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('REVOKE CREATE ON SCHEMA chat FROM chat_definer')
    op.execute('SET LOCAL ROLE chat_definer')
    op.execute('GRANT EXECUTE ON FUNCTION chat.encryption_summary() TO chat_owner')
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute("CREATE OR REPLACE FUNCTION chat.my_thread_counts(p_thread_ids uuid[])\n  RETURNS TABLE(thread_id uuid, participant_count bigint, message_count bigint, unread_count bigint)\n  LANGUAGE sql\n  STABLE\n  SECURITY DEFINER\n  SET search_path = pg_catalog, pg_temp\nAS $fn$\nSELECT me.thread_id,\n       (SELECT pg_catalog.count(*) FROM chat.thread_participants tp\n         WHERE tp.thread_id = me.thread_id),\n       (SELECT pg_catalog.count(*) FROM chat.messages m\n         WHERE m.thread_id = me.thread_id),\n       (SELECT pg_catalog.count(*) FROM chat.messages m\n         WHERE m.thread_id = me.thread_id\n           AND m.created_at > COALESCE(me.last_read_at, '-infinity'::pg_catalog.timestamptz))\n  FROM chat.thread_participants me\n WHERE me.user_id = chat.current_user_id()\n   AND me.thread_id = ANY (p_thread_ids)\n$fn$")
    op.execute('GRANT CREATE ON SCHEMA chat TO chat_definer')
    op.execute('RESET ROLE')
    op.execute('ALTER FUNCTION chat.my_thread_counts(uuid[]) OWNER TO chat_definer')
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('REVOKE CREATE ON SCHEMA chat FROM chat_definer')
    op.execute('GRANT CREATE ON SCHEMA chat TO chat_definer')
    op.execute('SET LOCAL ROLE chat_definer')
    op.execute("CREATE FUNCTION chat.keep_an_owner()\n  RETURNS trigger\n  LANGUAGE plpgsql\n  VOLATILE\n  SECURITY DEFINER\n  SET search_path = pg_catalog, pg_temp\nAS $fn$\nBEGIN\n  IF TG_OP = 'UPDATE' AND NEW.role = 'owner' THEN\n    RETURN NULL;\n  END IF;\n  PERFORM pg_catalog.pg_advisory_xact_lock(\n    1667785076, pg_catalog.hashtext(OLD.thread_id::pg_catalog.text));\n  IF NOT EXISTS (SELECT 1 FROM chat.threads t WHERE t.id = OLD.thread_id)\n     OR NOT EXISTS (SELECT 1 FROM chat.users u WHERE u.id = OLD.user_id) THEN\n    RETURN NULL;\n  END IF;\n  IF pg_catalog.current_setting('transaction_isolation') = 'repeatable read' THEN\n    RAISE EXCEPTION 'chatsec: an owner leaves or steps down only in a READ COMMITTED or SERIALIZABLE transaction'\n      USING ERRCODE = '0A000';\n  END IF;\n  IF NOT EXISTS (SELECT 1 FROM chat.thread_participants p\n                  WHERE p.thread_id = OLD.thread_id AND p.role = 'owner') THEN\n    RAISE EXCEPTION 'chatsec: thread % would have no owner', OLD.thread_id\n      USING ERRCODE = '23514',\n            HINT = 'make another participant an owner first, then leave or step down';\n  END IF;\n  RETURN NULL;\nEND\n$fn$")
    op.execute('REVOKE EXECUTE ON FUNCTION chat.keep_an_owner() FROM PUBLIC')
    op.execute('GRANT EXECUTE ON FUNCTION chat.keep_an_owner() TO chat_owner')
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('REVOKE CREATE ON SCHEMA chat FROM chat_definer')
    op.execute('SET LOCAL ROLE chat_definer')
    op.execute('ALTER DEFAULT PRIVILEGES FOR ROLE chat_definer REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC')
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('GRANT SELECT (created_at, key_id, thread_id) ON TABLE chat.messages TO chat_definer')
    op.execute('CREATE POLICY messages_definer_read ON chat.messages\n  AS PERMISSIVE\n  FOR SELECT\n  TO chat_definer\n  USING (true)')
    op.execute('DROP POLICY messages_owner_read ON chat.messages')
    op.execute('GRANT SELECT (last_read_at, role, thread_id, user_id) ON TABLE chat.thread_participants TO chat_definer')
    op.execute('CREATE POLICY participants_definer_read ON chat.thread_participants\n  AS PERMISSIVE\n  FOR SELECT\n  TO chat_definer\n  USING (true)')
    op.execute("CREATE POLICY participants_delete_by_role_or_self ON chat.thread_participants\n  AS PERMISSIVE\n  FOR DELETE\n  TO app_user\n  USING (user_id = (SELECT chat.current_user_id())\nOR (role <> 'owner'\n    AND thread_id IN (SELECT m.thread_id FROM chat.my_memberships() m WHERE m.role = 'owner'))\nOR (role = 'member'\n    AND thread_id IN (SELECT m.thread_id FROM chat.my_memberships() m WHERE m.role = 'admin')))")
    op.execute("CREATE POLICY participants_insert_by_role ON chat.thread_participants\n  AS PERMISSIVE\n  FOR INSERT\n  TO app_user\n  WITH CHECK (thread_id IN (SELECT m.thread_id FROM chat.my_memberships() m WHERE m.role = 'owner')\nOR (role = 'member'\n    AND thread_id IN (SELECT m.thread_id FROM chat.my_memberships() m WHERE m.role = 'admin')))")
    op.execute("CREATE POLICY participants_update_owner ON chat.thread_participants\n  AS PERMISSIVE\n  FOR UPDATE\n  TO app_user\n  USING (thread_id IN (SELECT m.thread_id FROM chat.my_memberships() m WHERE m.role = 'owner')\nAND (role <> 'owner' OR user_id = (SELECT chat.current_user_id())))\n  WITH CHECK (thread_id IN (SELECT m.thread_id FROM chat.my_memberships() m WHERE m.role = 'owner'))")
    op.execute('DROP POLICY participants_delete_admin_or_self ON chat.thread_participants')
    op.execute('DROP POLICY participants_insert_admin ON chat.thread_participants')
    op.execute('DROP POLICY participants_owner_read ON chat.thread_participants')
    op.execute('DROP POLICY participants_update_admin ON chat.thread_participants')
    op.execute('GRANT SELECT (created_by, id) ON TABLE chat.threads TO chat_definer')
    op.execute('CREATE POLICY threads_definer_read ON chat.threads\n  AS PERMISSIVE\n  FOR SELECT\n  TO chat_definer\n  USING (true)')
    op.execute('DROP POLICY threads_owner_read ON chat.threads')
    op.execute('GRANT SELECT (first_name, id, last_name, profile_image, username) ON TABLE chat.users TO chat_definer')
    op.execute('CREATE POLICY users_definer_read ON chat.users\n  AS PERMISSIVE\n  FOR SELECT\n  TO chat_definer\n  USING (true)')
    op.execute('CREATE POLICY users_select_self ON chat.users\n  AS PERMISSIVE\n  FOR SELECT\n  TO app_user\n  USING (id = (SELECT chat.current_user_id()))')
    op.execute('DROP POLICY users_select_self_or_contact ON chat.users')
    op.execute('RESET ROLE')
    # --- end of generated part ---
    op.execute("SET LOCAL ROLE chat_owner")
    op.execute("GRANT CREATE ON SCHEMA chat TO chat_definer")
    op.execute("SET LOCAL ROLE chat_definer")
    op.execute(_USER_PROFILES)
    op.execute("GRANT SELECT ON TABLE chat.user_profiles TO app_user")
    op.execute("SET LOCAL ROLE chat_owner")
    op.execute("REVOKE CREATE ON SCHEMA chat FROM chat_definer")
    op.execute(
        "CREATE TRIGGER thread_participants_keep_an_owner "
        "AFTER UPDATE OF role OR DELETE ON chat.thread_participants "
        "FOR EACH ROW WHEN (OLD.role = 'owner') EXECUTE FUNCTION chat.keep_an_owner()"
    )
    op.execute("RESET ROLE")
    op.execute(_CLOSE_DATABASE)
    op.execute(_CLOSE_LARGE_OBJECTS)


def downgrade() -> None:
    op.execute("SET LOCAL ROLE chat_owner")
    op.execute("DROP TRIGGER thread_participants_keep_an_owner ON chat.thread_participants")
    op.execute("SET LOCAL ROLE chat_definer")
    op.execute("DROP VIEW chat.user_profiles")
    op.execute("RESET ROLE")
    # --- generated by chatsec plan from policies/ ---
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('CREATE POLICY users_select_self_or_contact ON chat.users\n  AS PERMISSIVE\n  FOR SELECT\n  TO app_user\n  USING (((id = ( SELECT chat.current_user_id() AS current_user_id)) OR (EXISTS ( SELECT 1\n   FROM chat.thread_participants p\n  WHERE ((p.user_id = users.id) AND (p.thread_id IN ( SELECT chat.my_thread_ids() AS my_thread_ids)))))))')
    op.execute('DROP POLICY users_select_self ON chat.users')
    op.execute('DROP POLICY users_definer_read ON chat.users')
    op.execute('REVOKE SELECT (first_name, id, last_name, profile_image, username) ON TABLE chat.users FROM chat_definer')
    op.execute('CREATE POLICY threads_owner_read ON chat.threads\n  AS PERMISSIVE\n  FOR SELECT\n  TO chat_owner\n  USING (true)')
    op.execute('DROP POLICY threads_definer_read ON chat.threads')
    op.execute('REVOKE SELECT (created_by, id) ON TABLE chat.threads FROM chat_definer')
    op.execute('CREATE POLICY participants_update_admin ON chat.thread_participants\n  AS PERMISSIVE\n  FOR UPDATE\n  TO app_user\n  USING ((thread_id IN ( SELECT chat.my_admin_thread_ids() AS my_admin_thread_ids)))\n  WITH CHECK ((thread_id IN ( SELECT chat.my_admin_thread_ids() AS my_admin_thread_ids)))')
    op.execute('CREATE POLICY participants_owner_read ON chat.thread_participants\n  AS PERMISSIVE\n  FOR SELECT\n  TO chat_owner\n  USING (true)')
    op.execute('CREATE POLICY participants_insert_admin ON chat.thread_participants\n  AS PERMISSIVE\n  FOR INSERT\n  TO app_user\n  WITH CHECK ((thread_id IN ( SELECT chat.my_admin_thread_ids() AS my_admin_thread_ids)))')
    op.execute('CREATE POLICY participants_delete_admin_or_self ON chat.thread_participants\n  AS PERMISSIVE\n  FOR DELETE\n  TO app_user\n  USING (((user_id = ( SELECT chat.current_user_id() AS current_user_id)) OR (thread_id IN ( SELECT chat.my_admin_thread_ids() AS my_admin_thread_ids))))')
    op.execute('DROP POLICY participants_update_owner ON chat.thread_participants')
    op.execute('DROP POLICY participants_insert_by_role ON chat.thread_participants')
    op.execute('DROP POLICY participants_delete_by_role_or_self ON chat.thread_participants')
    op.execute('DROP POLICY participants_definer_read ON chat.thread_participants')
    op.execute('REVOKE SELECT (last_read_at, role, thread_id, user_id) ON TABLE chat.thread_participants FROM chat_definer')
    op.execute('CREATE POLICY messages_owner_read ON chat.messages\n  AS PERMISSIVE\n  FOR SELECT\n  TO chat_owner\n  USING (true)')
    op.execute('DROP POLICY messages_definer_read ON chat.messages')
    op.execute('REVOKE SELECT (created_at, key_id, thread_id) ON TABLE chat.messages FROM chat_definer')
    op.execute('SET LOCAL ROLE chat_definer')
    op.execute('ALTER DEFAULT PRIVILEGES FOR ROLE chat_definer GRANT EXECUTE ON FUNCTIONS TO PUBLIC')
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('GRANT CREATE ON SCHEMA chat TO chat_definer')
    op.execute('SET LOCAL ROLE chat_definer')
    op.execute('DROP FUNCTION chat.keep_an_owner()')
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('REVOKE CREATE ON SCHEMA chat FROM chat_definer')
    op.execute('GRANT CREATE ON SCHEMA chat TO chat_definer')
    op.execute('RESET ROLE')
    op.execute('ALTER FUNCTION chat.my_thread_counts(uuid[]) OWNER TO chat_owner')
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('REVOKE CREATE ON SCHEMA chat FROM chat_definer')
    op.execute("CREATE OR REPLACE FUNCTION chat.my_thread_counts(p_thread_ids uuid[])\n RETURNS TABLE(thread_id uuid, participant_count bigint, message_count bigint, unread_count bigint)\n LANGUAGE sql\n STABLE SECURITY DEFINER\n SET search_path TO ''\nAS $function$\nSELECT me.thread_id,\n       (SELECT pg_catalog.count(*) FROM chat.thread_participants tp\n         WHERE tp.thread_id = me.thread_id),\n       (SELECT pg_catalog.count(*) FROM chat.messages m\n         WHERE m.thread_id = me.thread_id),\n       (SELECT pg_catalog.count(*) FROM chat.messages m\n         WHERE m.thread_id = me.thread_id\n           AND m.created_at > COALESCE(me.last_read_at, '-infinity'::timestamptz))\n  FROM chat.thread_participants me\n WHERE me.user_id = chat.current_user_id()\n   AND me.thread_id = ANY (p_thread_ids)\n$function$\n")
    op.execute('SET LOCAL ROLE chat_definer')
    op.execute('REVOKE EXECUTE ON FUNCTION chat.encryption_summary() FROM chat_owner')
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('GRANT CREATE ON SCHEMA chat TO chat_definer')
    op.execute('RESET ROLE')
    op.execute('ALTER FUNCTION chat.encryption_summary() OWNER TO chat_owner')
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('REVOKE CREATE ON SCHEMA chat FROM chat_definer')
    op.execute("CREATE OR REPLACE FUNCTION chat.encryption_summary()\n RETURNS TABLE(key_id text, rows bigint)\n LANGUAGE sql\n STABLE SECURITY DEFINER\n SET search_path TO ''\nAS $function$\nSELECT m.key_id, pg_catalog.count(*)\n  FROM chat.messages m\n GROUP BY m.key_id\n ORDER BY m.key_id\n$function$\n")
    op.execute('CREATE OR REPLACE FUNCTION chat.decrypt_message(p_content text, p_key_id text)\n RETURNS text\n LANGUAGE plpgsql\n STABLE\n SET search_path TO \'\'\nAS $function$\nDECLARE\n  v_keys jsonb;\n  v_key text;\nBEGIN\n  IF p_content IS NULL THEN\n    RETURN NULL;\n  END IF;\n  IF p_key_id IS NULL THEN\n    -- Written before encryption was deployed and not yet rotated: still plaintext.\n    RETURN p_content;\n  END IF;\n  BEGIN\n    v_keys := NULLIF(pg_catalog.current_setting(\'app.decryption_keys\', true), \'\')::jsonb;\n  EXCEPTION WHEN invalid_text_representation THEN\n    RAISE EXCEPTION \'chatsec: app.decryption_keys is not valid JSON\' USING ERRCODE = \'22023\';\n  END;\n  v_key := v_keys ->> p_key_id;\n  IF v_key IS NULL OR v_key = \'\' THEN\n    RAISE EXCEPTION \'chatsec: no key for encryption key id % in this transaction\',\n      pg_catalog.quote_literal(p_key_id)\n      USING ERRCODE = \'28000\', HINT = \'the keyring given to chatsec.app lacks this key\';\n  END IF;\n  RETURN extensions.pgp_sym_decrypt(extensions.dearmor(p_content), v_key);\nEXCEPTION WHEN external_routine_invocation_exception THEN\n  -- pgcrypto says only "Wrong key or corrupt data"; name the key id instead.\n  RAISE EXCEPTION \'chatsec: cannot decrypt message with key %: wrong key for that id or corrupt data\',\n    pg_catalog.quote_literal(p_key_id) USING ERRCODE = \'28000\';\nEND\n$function$\n')
    op.execute('CREATE OR REPLACE FUNCTION chat.encrypt_message()\n RETURNS trigger\n LANGUAGE plpgsql\n SET search_path TO \'\'\nAS $function$\nDECLARE\n  v_key text := pg_catalog.current_setting(\'app.encryption_key\', true);\n  v_key_id text := pg_catalog.current_setting(\'app.encryption_key_id\', true);\n  v_header_id text;\n  v_header_key text;\n  v_verifier text;\n  v_retired timestamptz;\nBEGIN\n  -- Rows from before encryption (key_id NULL) hold plaintext: any update encrypts them.\n  IF TG_OP = \'UPDATE\' AND NEW.content IS NOT DISTINCT FROM OLD.content\n     AND OLD.key_id IS NOT NULL THEN\n    NEW.key_id := OLD.key_id;\n    RETURN NEW;\n  END IF;\n\n  -- Already our ciphertext (INSERT ... ON CONFLICT DO UPDATE SET content = EXCLUDED.content\n  -- hands the UPDATE the row the INSERT trigger encrypted): keep it, once it is proven to\n  -- decrypt with this transaction\'s registered key for the id in its armor header.\n  IF NEW.content LIKE \'-----BEGIN PGP MESSAGE-----%\' THEN\n    BEGIN\n      SELECT h.value INTO v_header_id\n        FROM extensions.pgp_armor_headers(NEW.content) h\n       WHERE h.key = \'Chatsec-Key\';\n      IF v_header_id = v_key_id THEN\n        v_header_key := v_key;\n      ELSE\n        v_header_key := NULLIF(pg_catalog.current_setting(\'app.decryption_keys\', true), \'\')::jsonb\n                        ->> v_header_id;\n      END IF;\n      IF v_header_key IS NOT NULL AND v_header_key <> \'\' AND EXISTS (\n           SELECT 1 FROM chat.encryption_keys k\n            WHERE k.id = v_header_id AND k.retired_at IS NULL\n              AND k.verifier = pg_catalog.encode(\n                    extensions.hmac(\'chatsec-key-check\'::text, v_header_key, \'sha256\'), \'hex\'))\n      THEN\n        PERFORM extensions.pgp_sym_decrypt(extensions.dearmor(NEW.content), v_header_key);\n        NEW.key_id := v_header_id;\n        RETURN NEW;\n      END IF;\n    EXCEPTION\n      -- pgcrypto\'s "Corrupt ascii-armor" / "Wrong key or corrupt data", or bad JSON:\n      -- then it is not our ciphertext, and it is encrypted below like any text.\n      WHEN external_routine_invocation_exception OR invalid_text_representation THEN\n        NULL;\n    END;\n  END IF;\n\n  IF v_key IS NULL OR v_key = \'\' THEN\n    RAISE EXCEPTION \'chatsec: no encryption key in this transaction, message not stored\'\n      USING ERRCODE = \'28000\',\n            HINT = \'pass the keyring to chatsec.app.user_transaction (app.encryption_key)\';\n  END IF;\n  SELECT k.verifier, k.retired_at INTO v_verifier, v_retired\n    FROM chat.encryption_keys k WHERE k.id = v_key_id;\n  IF NOT FOUND THEN\n    RAISE EXCEPTION \'chatsec: encryption key id % is not registered, message not stored\',\n      pg_catalog.quote_literal(COALESCE(v_key_id, \'<none>\'))\n      USING ERRCODE = \'28000\', HINT = \'chatsec keys register\';\n  END IF;\n  IF v_retired IS NOT NULL THEN\n    RAISE EXCEPTION \'chatsec: encryption key % is retired, message not stored\',\n      pg_catalog.quote_literal(v_key_id) USING ERRCODE = \'28000\';\n  END IF;\n  IF v_verifier <> pg_catalog.encode(\n       extensions.hmac(\'chatsec-key-check\'::text, v_key, \'sha256\'), \'hex\') THEN\n    RAISE EXCEPTION \'chatsec: wrong key for encryption key id %, message not stored\',\n      pg_catalog.quote_literal(v_key_id) USING ERRCODE = \'28000\';\n  END IF;\n\n  -- Keys are 256 random bits, not passphrases: s2k-mode=1 (salted, not iterated),\n  -- since stretching only slows down guessing a low-entropy secret.\n  NEW.content := extensions.armor(\n    extensions.pgp_sym_encrypt(NEW.content, v_key, \'cipher-algo=aes256, s2k-mode=1\'),\n    ARRAY[\'Chatsec-Key\'], ARRAY[v_key_id]);\n  NEW.key_id := v_key_id;\n  -- A rotation rewrites ciphertext only: the message itself was not edited.\n  IF TG_OP = \'UPDATE\' AND CURRENT_USER = \'chat_key_rotator\' THEN\n    NEW.updated_at := OLD.updated_at;\n  END IF;\n  RETURN NEW;\nEND\n$function$\n')
    op.execute('GRANT CREATE ON SCHEMA chat TO chat_definer')
    op.execute('RESET ROLE')
    op.execute('ALTER FUNCTION chat.my_memberships() OWNER TO chat_owner')
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('REVOKE CREATE ON SCHEMA chat FROM chat_definer')
    op.execute("CREATE OR REPLACE FUNCTION chat.my_memberships()\n RETURNS TABLE(thread_id uuid, role text)\n LANGUAGE sql\n STABLE SECURITY DEFINER\n SET search_path TO ''\nAS $function$\nSELECT tp.thread_id, tp.role::text\n  FROM chat.thread_participants tp\n WHERE tp.user_id = chat.current_user_id()\n$function$\n")
    op.execute('GRANT CREATE ON SCHEMA chat TO chat_definer')
    op.execute('RESET ROLE')
    op.execute('ALTER FUNCTION chat.my_claimable_thread_ids() OWNER TO chat_owner')
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('REVOKE CREATE ON SCHEMA chat FROM chat_definer')
    op.execute("CREATE OR REPLACE FUNCTION chat.my_claimable_thread_ids()\n RETURNS SETOF uuid\n LANGUAGE sql\n STABLE SECURITY DEFINER\n SET search_path TO ''\nAS $function$\nSELECT t.id\n  FROM chat.threads t\n WHERE t.created_by = chat.current_user_id()\n   AND NOT EXISTS (SELECT 1 FROM chat.thread_participants tp WHERE tp.thread_id = t.id)\n$function$\n")
    op.execute('GRANT CREATE ON SCHEMA chat TO chat_definer')
    op.execute('RESET ROLE')
    op.execute('ALTER FUNCTION chat.my_admin_thread_ids() OWNER TO chat_owner')
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('REVOKE CREATE ON SCHEMA chat FROM chat_definer')
    op.execute("CREATE OR REPLACE FUNCTION chat.my_admin_thread_ids()\n RETURNS SETOF uuid\n LANGUAGE sql\n STABLE SECURITY DEFINER\n SET search_path TO ''\nAS $function$\nSELECT tp.thread_id\n  FROM chat.thread_participants tp\n WHERE tp.user_id = chat.current_user_id()\n   AND tp.role IN ('owner', 'admin')\n$function$\n")
    op.execute('GRANT CREATE ON SCHEMA chat TO chat_definer')
    op.execute('RESET ROLE')
    op.execute('ALTER FUNCTION chat.my_thread_ids() OWNER TO chat_owner')
    op.execute('SET LOCAL ROLE chat_owner')
    op.execute('REVOKE CREATE ON SCHEMA chat FROM chat_definer')
    op.execute("CREATE OR REPLACE FUNCTION chat.my_thread_ids()\n RETURNS SETOF uuid\n LANGUAGE plpgsql\n STABLE SECURITY DEFINER\n SET search_path TO ''\nAS $function$\nBEGIN\n  RETURN QUERY\n  SELECT tp.thread_id\n    FROM chat.thread_participants tp\n   WHERE tp.user_id = chat.current_user_id();\nEND\n$function$\n")
    op.execute('REVOKE EXECUTE ON FUNCTION chat.current_user_id() FROM chat_definer')
    op.execute("CREATE OR REPLACE FUNCTION chat.current_user_id()\n RETURNS uuid\n LANGUAGE sql\n STABLE\n SET search_path TO ''\nAS $function$\nSELECT NULLIF(pg_catalog.current_setting('app.user_id', true), '')::uuid\n$function$\n")
    op.execute("CREATE OR REPLACE FUNCTION chat.set_updated_at()\n RETURNS trigger\n LANGUAGE plpgsql\n SET search_path TO ''\nAS $function$\n        BEGIN\n          NEW.updated_at := pg_catalog.now();\n          RETURN NEW;\n        END\n        $function$\n")
    op.execute('REVOKE USAGE ON SCHEMA chat FROM chat_definer')
    op.execute('RESET ROLE')
    # --- end of generated part ---
    op.execute(
        "DO $$\nBEGIN\n  EXECUTE pg_catalog.format('GRANT TEMPORARY ON DATABASE %I TO app_user', "
        "pg_catalog.current_database());\nEND\n$$"
    )
