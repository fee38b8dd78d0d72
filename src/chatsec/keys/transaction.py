"""The transaction-local settings that hand a keyring's keys to the encryption trigger."""

from __future__ import annotations

import json

from chatsec.keys.keyring import Keyring

ENCRYPTION_KEY = "app.encryption_key"
ENCRYPTION_KEY_ID = "app.encryption_key_id"
DECRYPTION_KEYS = "app.decryption_keys"


def key_settings(keyring: Keyring) -> list[tuple[str, str]]:
    """(name, value) pairs for set_config(name, value, true); values are secret.

    The active key encrypts, every readable key (active and previous) decrypts, so
    rows under the old and the new key both read during a rotation. A keyring with
    no active key still reads; the trigger refuses its writes (fail closed).
    """
    readable = keyring.readable_keys
    settings = [(DECRYPTION_KEYS, json.dumps({key.id: key.material for key in readable}))]
    active = [key for key in readable if key.status == "active"]
    if active:
        settings += [(ENCRYPTION_KEY, active[0].material), (ENCRYPTION_KEY_ID, active[0].id)]
    return settings
