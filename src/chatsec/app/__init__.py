"""The application side: an engine for app_user logins and per-transaction chat identity.

    engine = create_app_engine()              # CHATSEC_APP_DATABASE_URL, CHATSEC_IDENTITY_KEYRING
    with user_transaction(engine, alice_id) as conn:
        conn.execute(text("SELECT * FROM messages"))   # RLS shows only alice's threads
"""

from chatsec.app.engine import PoolSettings, create_app_engine
from chatsec.app.session import user_transaction

__all__ = ["PoolSettings", "create_app_engine", "user_transaction"]
