"""What chatsec's decryption path costs per row against bare pgcrypto.

The same rows (a seeded sample spread over the whole table), three statements run as
the superuser with the transaction's keys set as the application sets them, round after
round (the order rotating each round so none always comes first):

- chat.decrypt_message(content, key_id, id, thread_id), what every read of chatsec uses;
- extensions.pgp_sym_decrypt(extensions.dearmor(content), key), the bare floor;
- count(content), the read alone, subtracted from both.

Per row = (median of the statement - median of the read) / rows.
"""

from __future__ import annotations

import statistics
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from chatsec.bench import checks
from chatsec.bench.engines import Engines, Params
from chatsec.bench.interleave import PRIME
from chatsec.bench.stats import num, summarize

_SAMPLE = "SELECT id FROM chat.messages ORDER BY md5(CAST(id AS text) || :seed) LIMIT :n"
CHATSEC = (
    "SELECT count(chat.decrypt_message(content, key_id, id, thread_id)) FROM chat.messages "
    "WHERE id = ANY(:ids)"
)
RAW = (
    "SELECT count(extensions.pgp_sym_decrypt(extensions.dearmor(content), :key)) "
    "FROM chat.messages WHERE id = ANY(:ids)"
)
READ = "SELECT count(content) FROM chat.messages WHERE id = ANY(:ids)"


def sample_ids(engines: Engines, rows: int, seed: int) -> list[UUID]:
    with engines.superuser.connect() as conn:
        return list(conn.execute(sa.text(_SAMPLE), {"seed": str(seed), "n": rows}).scalars().all())


def decrypt_cost(engines: Engines, user: UUID, rows: int, repeat: int, seed: int) -> dict[str, Any]:
    ids = sample_ids(engines, rows, seed)
    key = engines.keyring.active.material
    statements: list[tuple[str, str, Params]] = [
        ("chatsec", CHATSEC, {"ids": ids}),
        ("raw", RAW, {"ids": ids, "key": key}),
        ("read", READ, {"ids": ids}),
    ]
    times: dict[str, list[float]] = {name: [] for name, _, _ in statements}
    for round_ in range(PRIME + repeat):
        k = round_ % len(statements)
        for name, sql, params in statements[k:] + statements[:k]:
            run = engines.timed("superuser", user, sql, params)
            if round_ >= PRIME:
                times[name].append(run.ms)
    read = statistics.median(times["read"])
    n = max(len(ids), 1)

    def per_row_us(name: str) -> float:
        return (statistics.median(times[name]) - read) * 1000.0 / n

    chatsec_us, raw_us = per_row_us("chatsec"), per_row_us("raw")
    ratio = checks.ratio(chatsec_us, raw_us)
    return {
        "rows": len(ids),
        "repeat": repeat,
        "chat_decrypt_message_us_per_row": num(chatsec_us, 3),
        "pgp_sym_decrypt_us_per_row": num(raw_us, 3),
        "ratio": num(ratio, 3),
        "chat_decrypt_message_ms": summarize(times["chatsec"]).to_json(),
        "pgp_sym_decrypt_ms": summarize(times["raw"]).to_json(),
        "read_only_ms": summarize(times["read"]).to_json(),
        "checks": [checks.at_most("decrypt.ratio", ratio, checks.DECRYPT).to_json()],
    }
