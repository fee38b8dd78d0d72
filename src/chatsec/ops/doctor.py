"""`chatsec doctor`: health, statistics and maintenance advice, read as the auditor login.

Everything comes from the statistics views the predefined roles pg_monitor and
pg_read_all_settings open (chat_auditor is a member of both); no chat data is read and
no superuser is needed. Query texts are printed only after masking anything that
touches the encryption settings.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from chatsec.db.connect import connect
from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError

FORMAT = "chatsec-doctor"
VERSION = 1
CHAT_SCHEMAS = ("chat",)
TOP_STATEMENTS = 10
QUERY_CHARS = 200
MASK = "<masked: touches encryption settings>"
# Keys travel only as bind parameters ($1), but a hand-typed SET or a literal in a
# statement would put one into pg_stat_statements and pg_stat_activity: mask anything
# that names the key settings, sets configuration, calls pgcrypto's symmetric
# functions or carries a 64-hex-digit value (the keyring's key format).
_SENSITIVE = re.compile(
    r"app\.(encryption_key|decryption_keys)|set_config|pgp_sym_|pgp_pub_"
    r"|(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])",
    re.IGNORECASE,
)
# Autovacuum's own defaults (threshold 50 rows + 20 % of the table; analyze 50 + 10 %):
# beyond them autovacuum should already have run, so the operator is told to run it.
VACUUM_MIN_DEAD = 50
VACUUM_DEAD_RATIO = 0.2
ANALYZE_MIN_CHANGES = 50
ANALYZE_CHANGE_RATIO = 0.1
# A btree at twice its compact size (estimated) and over 1 MiB is worth rebuilding online.
REINDEX_BLOAT_RATIO = 0.5
REINDEX_MIN_BYTES = 1024 * 1024
_BLOCK = 8192
_PAGE_OVERHEAD = 24 + 16  # page header + btree special space
_LEAF_FILL = 0.9  # btree's default fillfactor
_INDEX_TUPLE_HEADER = 8
_LINE_POINTER = 4
_VARLENA_GUESS = 16  # the auditor cannot read pg_stats widths of chat columns

_SERVER = """
SELECT pg_catalog.current_setting('server_version'),
       pg_catalog.current_setting('server_version_num')::int,
       pg_catalog.pg_postmaster_start_time(),
       pg_catalog.current_database(), current_user,
       pg_catalog.current_setting('max_connections')::int,
       r.rolsuper, r.rolbypassrls,
       pg_catalog.pg_has_role(current_user, 'pg_monitor', 'USAGE'),
       pg_catalog.pg_has_role(current_user, 'pg_read_all_settings', 'USAGE'),
       pg_catalog.current_setting('shared_preload_libraries')
  FROM pg_catalog.pg_roles r WHERE r.rolname = current_user
"""
_BY_STATE = """
SELECT coalesce(state, 'unknown'), count(*)::int FROM pg_catalog.pg_stat_activity
 WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 2 DESC, 1
"""
_BY_ROLE = """
SELECT coalesce(usename::text, '(none)'), count(*)::int FROM pg_catalog.pg_stat_activity
 WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 2 DESC, 1
"""
# Relation names resolve only for the current database; other databases show the oid.
_LOCKS = """
SELECT l.pid, coalesce(a.usename::text, ''), coalesce(a.datname::text, ''), l.locktype,
       CASE WHEN l.relation IS NULL THEN NULL
            WHEN l.database = (SELECT oid FROM pg_catalog.pg_database
                                WHERE datname = pg_catalog.current_database())
            THEN l.relation::pg_catalog.regclass::text
            ELSE l.relation::text END,
       l.mode, l.granted, pg_catalog.pg_blocking_pids(l.pid),
       extract(epoch FROM pg_catalog.clock_timestamp() - l.waitstart)::float8,
       extract(epoch FROM pg_catalog.clock_timestamp() - a.xact_start)::float8,
       coalesce(a.state, ''), coalesce(a.query, '')
  FROM pg_catalog.pg_locks l
  LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
 WHERE l.pid <> pg_catalog.pg_backend_pid()
   AND (NOT l.granted
        OR (l.locktype = 'relation' AND l.database = (SELECT oid FROM pg_catalog.pg_database
                                        WHERE datname = pg_catalog.current_database())
            AND l.relation >= 16384))
 ORDER BY l.granted, l.pid, 5
"""
_STATEMENTS_SCHEMA = """
SELECT n.nspname FROM pg_catalog.pg_extension e
  JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = 'pg_stat_statements'
"""
_STATEMENTS = """
SELECT s.queryid, coalesce(r.rolname::text, s.userid::text), s.calls, s.total_exec_time,
       s.mean_exec_time, s.rows, s.query
  FROM {schema}.pg_stat_statements s
  LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.userid
 WHERE s.dbid = (SELECT oid FROM pg_catalog.pg_database
                  WHERE datname = pg_catalog.current_database())
 ORDER BY s.total_exec_time DESC LIMIT %s
"""
# Sizes come from pg_class.relpages (as of the last VACUUM, ANALYZE or CREATE INDEX), not
# pg_relation_size(): that takes a lock, and a health report must not queue behind the
# very ACCESS EXCLUSIVE lock it is asked to report.
_INDEXES = """
SELECT s.schemaname::text, s.relname::text, s.indexrelname::text, s.idx_scan, s.idx_tup_read,
       s.idx_tup_fetch, c.relpages::bigint * pg_catalog.current_setting('block_size')::int,
       i.indisunique,
       i.indisprimary, am.amname::text, c.reltuples::float8, t.n_live_tup,
       (SELECT pg_catalog.array_agg(coalesce(ty.typlen::int, -1) ORDER BY k.ord)
          FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
          LEFT JOIN pg_catalog.pg_attribute a
                 ON a.attrelid = i.indrelid AND a.attnum = k.attnum
          LEFT JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid)
  FROM pg_catalog.pg_stat_user_indexes s
  JOIN pg_catalog.pg_index i ON i.indexrelid = s.indexrelid
  JOIN pg_catalog.pg_class c ON c.oid = s.indexrelid
  JOIN pg_catalog.pg_am am ON am.oid = c.relam
  JOIN pg_catalog.pg_stat_user_tables t ON t.relid = s.relid
 WHERE s.schemaname = ANY(%s)
 ORDER BY s.schemaname, s.relname, s.indexrelname
"""
_TABLES = """
SELECT s.schemaname::text, s.relname::text, s.seq_scan, s.seq_tup_read,
       coalesce(s.idx_scan, 0), coalesce(s.idx_tup_fetch, 0), s.n_tup_ins, s.n_tup_upd,
       s.n_tup_del, s.n_tup_hot_upd, s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze,
       (c.relpages::bigint + coalesce(tc.relpages, 0))
         * pg_catalog.current_setting('block_size')::int,
       s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze, s.vacuum_count,
       s.autovacuum_count, s.analyze_count, s.autoanalyze_count
  FROM pg_catalog.pg_stat_user_tables s
  JOIN pg_catalog.pg_class c ON c.oid = s.relid
  LEFT JOIN pg_catalog.pg_class tc ON tc.oid = c.reltoastrelid
 WHERE s.schemaname = ANY(%s)
 ORDER BY s.schemaname, s.relname
"""


@dataclass(frozen=True)
class Server:
    version: str
    version_num: int
    started_at: str
    database: str
    connected_as: str


@dataclass(frozen=True)
class Count:
    name: str
    count: int


@dataclass(frozen=True)
class Connections:
    max_connections: int
    total: int
    by_state: list[Count]
    by_role: list[Count]


@dataclass(frozen=True)
class Lock:
    pid: int
    role: str
    database: str
    locktype: str
    relation: str | None
    mode: str
    granted: bool
    blocked_by: list[int]  # pg_blocking_pids() of a waiting lock
    blocks: list[int]  # waiting pids this session holds up
    waiting_s: float | None
    transaction_s: float | None
    state: str
    query: str


@dataclass(frozen=True)
class Locks:
    held: list[Lock]
    waiting: list[Lock]


@dataclass(frozen=True)
class Statement:
    queryid: int | None
    role: str
    calls: int
    total_ms: float
    mean_ms: float
    rows: int
    rows_per_call: float
    query: str


@dataclass(frozen=True)
class Statements:
    available: bool
    reason: str | None
    top: list[Statement]


@dataclass(frozen=True)
class Index:
    schema: str
    table: str
    index: str
    method: str
    idx_scan: int
    idx_tup_read: int
    idx_tup_fetch: int
    size_bytes: int
    unique: bool
    primary: bool
    unused: bool
    estimated_bloat_ratio: float | None  # btree only: 1 - compact size / actual size
    estimated_bloat_bytes: int | None


@dataclass(frozen=True)
class Table:
    schema: str
    table: str
    seq_scan: int
    seq_tup_read: int
    idx_scan: int
    idx_tup_fetch: int
    n_tup_ins: int
    n_tup_upd: int
    n_tup_del: int
    n_tup_hot_upd: int
    n_live_tup: int
    n_dead_tup: int
    dead_ratio: float
    n_mod_since_analyze: int
    size_bytes: int
    estimated_bloat_bytes: int
    last_vacuum: str | None
    last_autovacuum: str | None
    last_analyze: str | None
    last_autoanalyze: str | None
    vacuum_count: int
    autovacuum_count: int
    analyze_count: int
    autoanalyze_count: int


@dataclass(frozen=True)
class Recommendation:
    action: str  # the SQL to run
    reason: str


@dataclass
class Report:
    target: str
    generated_at: str
    server: Server
    connections: Connections
    locks: Locks
    statements: Statements
    indexes: list[Index]
    tables: list[Table]
    recommendations: list[Recommendation] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}


def mask_query(text: str) -> str:
    """The statement text, or MASK when it could carry a key; cut to QUERY_CHARS."""
    if _SENSITIVE.search(text):
        return MASK
    flat = " ".join(text.split())
    return flat if len(flat) <= QUERY_CHARS else flat[: QUERY_CHARS - 1] + "…"


def _iso(value: object) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def _server(conn: psycopg.Connection[Any], url: DatabaseURL) -> tuple[Server, int, str]:
    row = conn.execute(_SERVER).fetchone()
    if row is None:
        raise ChatsecError(f"cannot read the login's own role on {url.target}")
    version, num, started, database, user, max_conn, sup, bypass, monitor, settings, preload = row
    if sup or bypass:
        # Fail closed: a monitoring report must not need (or normalise) a login that reads
        # every row; doctor is meant for the auditor.
        raise ChatsecError(
            f"{user} is a superuser or has BYPASSRLS: run chatsec doctor as the auditor login "
            "(--database-url or $CHATSEC_AUDIT_DATABASE_URL)"
        )
    if not (monitor and settings):
        # Without pg_monitor other sessions' state and queries read "<insufficient privilege>":
        # an incomplete report would look healthy, so refuse instead.
        raise ChatsecError(
            f"{user} lacks pg_monitor / pg_read_all_settings: GRANT chat_auditor TO {user}"
        )
    server = Server(str(version), int(num), _iso(started) or "", str(database), str(user))
    return server, int(max_conn), str(preload)


def _connections(conn: psycopg.Connection[Any], max_connections: int) -> Connections:
    by_state = [Count(str(n), int(c)) for n, c in conn.execute(_BY_STATE).fetchall()]
    by_role = [Count(str(n), int(c)) for n, c in conn.execute(_BY_ROLE).fetchall()]
    return Connections(max_connections, sum(c.count for c in by_state), by_state, by_role)


def _locks(conn: psycopg.Connection[Any]) -> Locks:
    rows = conn.execute(_LOCKS).fetchall()
    blocked_by = {int(r[0]): [int(p) for p in r[7] or []] for r in rows if not r[6]}
    held: list[Lock] = []
    waiting: list[Lock] = []
    for pid, role, db, locktype, rel, mode, granted, blockers, wait_s, xact_s, state, q in rows:
        blocks = sorted(w for w, by in blocked_by.items() if int(pid) in by)
        lock = Lock(
            int(pid), str(role), str(db), str(locktype), None if rel is None else str(rel),
            str(mode), bool(granted), [int(p) for p in blockers or []] if not granted else [],
            blocks, None if wait_s is None else round(float(wait_s), 3),
            None if xact_s is None else round(float(xact_s), 3), str(state), mask_query(str(q)),
        )  # fmt: skip
        (held if granted else waiting).append(lock)
    return Locks(held, waiting)


def _statements(conn: psycopg.Connection[Any], preload: str) -> Statements:
    row = conn.execute(_STATEMENTS_SCHEMA).fetchone()
    if row is None:
        return Statements(
            False,
            "pg_stat_statements is not installed in this database: as a superuser run "
            "CREATE EXTENSION pg_stat_statements (the sandbox does)",
            [],
        )
    loaded = "pg_stat_statements" in [p.strip() for p in preload.split(",")]
    if not loaded:
        return Statements(
            False,
            "pg_stat_statements is installed but not loaded: set shared_preload_libraries = "
            "'pg_stat_statements' in postgresql.conf and restart the server",
            [],
        )
    query = _STATEMENTS.format(schema=sql.Identifier(str(row[0])).as_string(conn))
    top = []
    for queryid, role, calls, total, mean, rows, text in conn.execute(
        query, (TOP_STATEMENTS,)
    ).fetchall():
        calls = int(calls)
        top.append(
            Statement(
                None if queryid is None else int(queryid),
                str(role),
                calls,
                round(float(total), 3),
                round(float(mean), 3),
                int(rows),
                round(int(rows) / calls, 2) if calls else 0.0,
                mask_query(str(text)),
            )  # fmt: skip
        )
    return Statements(True, None, top)


def estimate_btree_bloat(size_bytes: int, tuples: float, key_widths: list[int]) -> float | None:
    """1 - (size of a freshly built btree holding `tuples`) / size_bytes; None if unknown.

    A rough estimate from the column type widths (variable-length ones guessed), in the
    spirit of the usual catalog-only bloat queries; good enough to say "rebuild now".
    """
    if size_bytes <= 0 or tuples < 0 or not key_widths:
        return None
    data = sum(w if w > 0 else _VARLENA_GUESS for w in key_widths)
    tuple_bytes = math.ceil((_INDEX_TUPLE_HEADER + data) / 8) * 8 + _LINE_POINTER
    per_page = (_BLOCK - _PAGE_OVERHEAD) * _LEAF_FILL
    leaves = max(1, math.ceil(tuples * tuple_bytes / per_page))
    # Inner pages are about 1 % of the leaves; one metapage.
    compact = (leaves + math.ceil(leaves / 100) + 1) * _BLOCK
    return round(max(0.0, 1 - compact / size_bytes), 3)


def _indexes(conn: psycopg.Connection[Any]) -> list[Index]:
    out = []
    for row in conn.execute(_INDEXES, (list(CHAT_SCHEMAS),)).fetchall():
        schema, table, index, scans, read, fetch, size, unique, primary, method = row[:10]
        reltuples, live, widths = row[10:]
        tuples = float(reltuples) if reltuples is not None and reltuples >= 0 else float(live)
        ratio = (
            estimate_btree_bloat(int(size), tuples, list(widths or []))
            if method == "btree"
            else None
        )
        out.append(
            Index(
                str(schema),
                str(table),
                str(index),
                str(method),
                int(scans),
                int(read),
                int(fetch),
                int(size),
                bool(unique),
                bool(primary),
                # Unique and primary-key indexes enforce constraints even when never scanned.
                int(scans) == 0 and not unique and not primary,
                ratio,
                None if ratio is None else int(ratio * int(size)),
            )  # fmt: skip
        )
    return out


def _tables(conn: psycopg.Connection[Any]) -> list[Table]:
    out = []
    for r in conn.execute(_TABLES, (list(CHAT_SCHEMAS),)).fetchall():
        n = [int(v) for v in r[2:14]] + [int(v) for v in r[18:22]]
        live, dead, size = n[8], n[9], n[11]
        ratio = round(dead / (live + dead), 3) if live + dead else 0.0
        out.append(
            Table(
                schema=str(r[0]),
                table=str(r[1]),
                seq_scan=n[0],
                seq_tup_read=n[1],
                idx_scan=n[2],
                idx_tup_fetch=n[3],
                n_tup_ins=n[4],
                n_tup_upd=n[5],
                n_tup_del=n[6],
                n_tup_hot_upd=n[7],
                n_live_tup=live,
                n_dead_tup=dead,
                dead_ratio=ratio,
                n_mod_since_analyze=n[10],
                size_bytes=size,
                # Dead rows take about their share of the heap until VACUUM frees it.
                estimated_bloat_bytes=int(size * ratio),
                last_vacuum=_iso(r[14]),
                last_autovacuum=_iso(r[15]),
                last_analyze=_iso(r[16]),
                last_autoanalyze=_iso(r[17]),
                vacuum_count=n[12],
                autovacuum_count=n[13],
                analyze_count=n[14],
                autoanalyze_count=n[15],
            )  # fmt: skip
        )
    return out


def recommend(tables: list[Table], indexes: list[Index]) -> list[Recommendation]:
    """What an operator should run now, from the figures alone (thresholds in the module)."""
    out = []
    for t in tables:
        name = f"{t.schema}.{t.table}"
        if t.n_dead_tup >= VACUUM_MIN_DEAD and t.dead_ratio >= VACUUM_DEAD_RATIO:
            out.append(Recommendation(
                f"VACUUM (ANALYZE) {name}",
                f"{t.n_dead_tup} dead rows ({t.dead_ratio:.0%} of the table, about "
                f"{human_size(t.estimated_bloat_bytes)}): space not yet reusable",
            ))  # fmt: skip
        elif t.n_live_tup and t.n_mod_since_analyze >= ANALYZE_MIN_CHANGES + (
            ANALYZE_CHANGE_RATIO * t.n_live_tup
        ):
            out.append(Recommendation(
                f"ANALYZE {name}",
                f"{t.n_mod_since_analyze} rows changed since the last analyze: "
                "the planner's statistics are stale",
            ))  # fmt: skip
        elif t.n_live_tup and t.last_analyze is None and t.last_autoanalyze is None:
            out.append(Recommendation(f"ANALYZE {name}", "never analyzed: no planner statistics"))
    for i in indexes:
        if (
            i.estimated_bloat_ratio is not None
            and i.estimated_bloat_ratio >= REINDEX_BLOAT_RATIO
            and i.size_bytes >= REINDEX_MIN_BYTES
        ):
            out.append(Recommendation(
                f"REINDEX INDEX CONCURRENTLY {i.schema}.{i.index}",
                f"about {i.estimated_bloat_ratio:.0%} of its {human_size(i.size_bytes)} is bloat "
                "(estimate): rebuilding online reclaims it without blocking writes",
            ))  # fmt: skip
    return out


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def run_doctor(url: DatabaseURL) -> Report:
    """Connect as the auditor login and gather the whole report in one read-only transaction."""
    with connect(url, application_name="chatsec doctor") as conn:
        # Statistics only: refuse to write, and never hang behind a lock for a health report.
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute("SET LOCAL statement_timeout = '10s'")
        conn.execute("SET LOCAL lock_timeout = '2s'")
        server, max_conn, preload = _server(conn, url)
        connections = _connections(conn, max_conn)
        locks = _locks(conn)
        statements = _statements(conn, preload)
        indexes = _indexes(conn)
        tables = _tables(conn)
        conn.rollback()
    report = Report(
        url.target, datetime.now(UTC).isoformat(), server, connections, locks, statements,
        indexes, tables,
    )  # fmt: skip
    report.recommendations = recommend(tables, indexes)
    return report
