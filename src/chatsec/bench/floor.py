"""The physical floor the write figures are measured against: a plain copy of the table.

`public.bench_plain` is chat.messages as it stands (every row, in the same physical
order: same size, same indexes, the same foreign keys to threads and users), without
the encryption trigger or the CHECK that content is ciphertext, and without RLS. The
plaintext inserts go into it, and the rotation's floor rewrites every row of it.
"""

from __future__ import annotations

import time

from chatsec.bench.generate import run_script
from chatsec.bench.target import Logins
from chatsec.db.connect import connect

TABLE = "public.bench_plain"

_CREATE = f"""
CREATE TABLE {TABLE} (LIKE chat.messages INCLUDING ALL);
ALTER TABLE {TABLE} DROP CONSTRAINT IF EXISTS messages_content_encrypted;
ALTER TABLE {TABLE} ADD FOREIGN KEY (thread_id) REFERENCES chat.threads(id) ON DELETE CASCADE;
ALTER TABLE {TABLE} ADD FOREIGN KEY (user_id) REFERENCES chat.users(id) ON DELETE CASCADE;
INSERT INTO {TABLE} SELECT * FROM chat.messages;
VACUUM (ANALYZE) {TABLE}
"""


def create_plain_copy(logins: Logins) -> float:
    """Create and fill the copy (as the superuser); the seconds it took."""
    start = time.perf_counter()
    with connect(logins.admin, autocommit=True, application_name="chatsec bench") as conn:
        run_script(conn, _CREATE)
    return time.perf_counter() - start


def drop_plain_copy(logins: Logins) -> None:
    with connect(logins.admin, autocommit=True, application_name="chatsec bench") as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
