"""The transaction-local settings that hand a keyring's keys (and a signed identity) to PostgreSQL."""

from __future__ import annotations

import json

from chatsec.keys.keyring import Keyring

ENCRYPTION_KEY = "app.encryption_key"
ENCRYPTION_KEY_ID = "app.encryption_key_id"
DECRYPTION_KEYS = "app.decryption_keys"
IDENTITY = "app.identity"  # the signed identity token (chatsec.identity)

# One statement, one round trip, every value a bind parameter, every setting local to
# the transaction (is_local = true). app.decryption_keys keeps only keys the registry
# still reads with: not retired (unusable) and not drained (rotated out, no rows left),
# so a transaction, and any SQL in it, holds the active key plus the previous keys of a
# rotation still under way, and nothing more. The keys are filtered before they become
# a setting: a key dropped here is never readable with current_setting().
TRANSACTION_SETTINGS = """
SELECT pg_catalog.set_config('app.identity', %(identity)s, true),
       pg_catalog.set_config('app.encryption_key', %(key)s, true),
       pg_catalog.set_config('app.encryption_key_id', %(key_id)s, true),
       pg_catalog.set_config('app.decryption_keys', COALESCE((
         SELECT pg_catalog.jsonb_object_agg(k.id, e.value)::pg_catalog.text
           FROM pg_catalog.jsonb_each_text(CAST(%(keys)s AS pg_catalog.jsonb)) e
           JOIN chat.encryption_keys k ON k.id = e.key
          WHERE k.retired_at IS NULL AND k.drained_at IS NULL), ''), true)
"""
IDENTITY_ONLY = "SELECT pg_catalog.set_config('app.identity', %(identity)s, true)"


def transaction_parameters(identity: str | None, keyring: Keyring | None) -> dict[str, str]:
    """Bind parameters for TRANSACTION_SETTINGS (or IDENTITY_ONLY without a keyring).

    The active key encrypts, every readable key (active and previous) may decrypt, so
    rows under the old and the new key both read during a rotation. A keyring with no
    active key still reads; the trigger refuses its writes (fail closed). `identity` is
    a signed token (chatsec.identity); None means no identity.
    """
    params = {"identity": identity or ""}
    if keyring is None:
        return params
    readable = keyring.readable_keys
    active = [key for key in readable if key.status == "active"]
    params["keys"] = json.dumps({key.id: key.material for key in readable})
    params["key"] = active[0].material if active else ""
    params["key_id"] = active[0].id if active else ""
    return params


def key_settings(keyring: Keyring) -> list[tuple[str, str]]:
    """(name, value) pairs for sessions that set the keys themselves (values are secret).

    Only for connections that are not the application's (the benchmark's generator, the
    tests' superuser): chatsec.app and chatsec keys use TRANSACTION_SETTINGS.
    """
    readable = keyring.readable_keys
    settings = [(DECRYPTION_KEYS, json.dumps({key.id: key.material for key in readable}))]
    active = [key for key in readable if key.status == "active"]
    if active:
        settings += [(ENCRYPTION_KEY, active[0].material), (ENCRYPTION_KEY_ID, active[0].id)]
    return settings
