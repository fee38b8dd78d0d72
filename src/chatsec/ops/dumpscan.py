"""Verifying a pg_dump archive before it counts: ciphertext proven, not shape.

A backup is kept, and a dump restored, only if reading it back in full finds:

- every chat.messages.content value an ASCII-armored OpenPGP message whose armor
  checksum holds and whose packets are exactly what pgcrypto's pgp_sym_encrypt writes:
  a Symmetric-Key Encrypted Session Key packet (tag 3), then a Symmetrically Encrypted
  Integrity Protected Data packet (tag 18), nothing else;
- with the keyring: every one of them decrypting, integrity (MDC) included, with the key
  its `Chatsec-Key` armor header names, to a single literal data packet (no compression);
- no key material: the keyring's secrets in hex, base64 or base64url anywhere (schema,
  every column of every table, large objects), key-shaped values in the schema text;
- no message text (with the keyring) anywhere outside chat.messages.content;
- no large objects, which live outside row-level security and encryption.

Checks that need the keyring and could not run are named in `DumpScan.unchecked`.
Reading the ciphertexts is chatsec.ops.openpgp's; pg_restore runs without secrets
(chatsec.sandbox.binaries.child_env) and dies with chatsec (binaries.start_tool).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from chatsec.errors import ChatsecError
from chatsec.keys.keyring import Key, Keyring
from chatsec.ops.openpgp import (
    KEY_HEADER,
    Armored,
    NotDecryptable,
    OpenPGPError,
    dearmor,
    decrypt,
    parse_packets,
    require_encrypted,
)
from chatsec.sandbox.binaries import first_error, run_tool, start_tool, stop_tool, tool

MESSAGES = "chat.messages"
CONTENT = "content"


# -- the dump as pg_restore renders it -----------------------------------------------------

_COPY_START = re.compile(r"COPY (.+?) \((.*)\) FROM stdin;")
_COPY_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)")
_COPY_CHARS = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
# pg_restore --file renders large objects' data as lo_open / lowrite (bytea hex) / lo_close.
_LO_CREATE = re.compile(r"SELECT pg_catalog\.lo_create\('(\d+)'\);")
_LO_OPEN = re.compile(r"SELECT pg_catalog\.lo_open\('(\d+)', \d+\);")
_LO_WRITE = re.compile(r"SELECT pg_catalog\.lowrite\(0, E?'\\{1,2}x((?:[0-9a-fA-F]{2})*)'\);")
_LO_CLOSE = "SELECT pg_catalog.lo_close(0);"
# Bytes of one large object kept for searching: any large object fails the scan anyway.
LARGE_OBJECT_SEARCH_BYTES = 64 << 20


def copy_unescape(value: str) -> str:
    """One field of COPY's text format, unescaped (\\n, \\t, \\\\, octal, hex)."""

    def one(match: re.Match[str]) -> str:
        seq = match.group(1)
        if seq[0] == "x" and len(seq) > 1:
            return chr(int(seq[1:], 16))
        if seq[0] in "01234567":
            return chr(int(seq, 8))
        return _COPY_CHARS.get(seq, seq)

    return _COPY_ESCAPE.sub(one, value)


def _copy_field(value: str) -> str | None:
    if value == "\\N":
        return None
    return copy_unescape(value) if "\\" in value else value


@dataclass(frozen=True)
class SchemaLine:
    """A line of the script outside COPY data and large objects' data."""

    number: int
    text: str


@dataclass(frozen=True)
class CopyRow:
    """One row of a table's COPY data; a field is None where the value is NULL."""

    number: int
    table: str
    columns: tuple[str, ...]
    fields: tuple[str | None, ...]


@dataclass(frozen=True)
class CopyStart:
    """The COPY line that starts a table's data."""

    number: int
    table: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class LargeObject:
    """A large object: its OID and data (the first LARGE_OBJECT_SEARCH_BYTES of it)."""

    number: int
    oid: str
    data: bytes = b""
    truncated: bool = False


DumpItem = SchemaLine | CopyStart | CopyRow | LargeObject


def script_lines(path: Path) -> Iterator[str]:
    """The dump as the SQL script pg_restore would run, line by line, without a database."""
    cmd = [tool("pg_restore"), "--file=-", str(path)]
    with tempfile.TemporaryFile() as stderr:
        proc = start_tool(cmd, stdout=subprocess.PIPE, stderr=stderr)
        assert proc.stdout is not None
        try:
            # Bytes, split on \n only: a stray \r in a function body must not split it.
            for raw in proc.stdout:
                yield raw.decode("utf-8", "replace").removesuffix("\n")
            proc.wait()
        except BaseException:
            # Interrupted, or the reader stopped early (GeneratorExit): pg_restore stops too.
            stop_tool(proc)
            raise
        finally:
            proc.stdout.close()
        stderr.seek(0)
        message = stderr.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise ChatsecError(f"{path} does not read back with pg_restore: {first_error(message)}")


def read_script(lines: Iterable[str]) -> Iterator[DumpItem]:
    """Schema lines, COPY rows and large objects of a pg_restore script, in order."""
    copying: CopyStart | None = None
    blob: LargeObject | None = None
    chunks: list[bytes] = []
    kept = 0
    for number, line in enumerate(lines, start=1):
        if copying is not None:
            if line == "\\.":
                copying = None
                continue
            fields = tuple(_copy_field(f) for f in line.split("\t"))
            yield CopyRow(number, copying.table, copying.columns, fields)
            continue
        if blob is not None:
            write = _LO_WRITE.fullmatch(line)
            if write is not None:
                data = bytes.fromhex(write.group(1))
                chunks.append(data[: max(0, LARGE_OBJECT_SEARCH_BYTES - kept)])
                kept += len(data)
                continue
            if line == _LO_CLOSE:
                truncated = kept > LARGE_OBJECT_SEARCH_BYTES
                yield LargeObject(blob.number, blob.oid, b"".join(chunks), truncated)
                blob = None
                continue
        start = _COPY_START.fullmatch(line)
        if start is not None:
            columns = tuple(c.strip().strip('"') for c in start.group(2).split(","))
            copying = CopyStart(number, start.group(1), columns)
            yield copying
            continue
        opened = _LO_OPEN.fullmatch(line)
        if opened is not None:
            blob, chunks, kept = LargeObject(number, opened.group(1)), [], 0
            continue
        created = _LO_CREATE.fullmatch(line)
        if created is not None:
            yield LargeObject(number, created.group(1))
        yield SchemaLine(number, line)
    if copying is not None or blob is not None:
        raise ChatsecError("the dump's script ends inside COPY data or a large object")


# -- key material --------------------------------------------------------------------------

# The keyring's key format is 64 hex digits; in schema text (function bodies, SET
# clauses, defaults, comments) such a value has no business being there. Row data is not
# scanned for this shape: chat.encryption_keys.verifier is an HMAC of exactly that shape.
KEY_SHAPED = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")
# 32 bytes in base64 or base64url: 43 characters, the last carrying 4 bits and two zero
# bits, an optional '='. Both cases must occur (a random key has them), so lower-case
# identifiers of that length are not taken for keys.
KEY_SHAPED_BASE64 = re.compile(
    r"(?<![A-Za-z0-9+/_-])(?=[A-Za-z0-9+/_-]*[A-Z])(?=[A-Za-z0-9+/_-]*[a-z])"
    r"(?:[A-Za-z0-9+/]{42}|[A-Za-z0-9_-]{42})[AEIMQUYcgkosw048]=?(?![A-Za-z0-9+/_=-])"
)
# A key setting given a literal value (SET app.encryption_key = '...', ALTER ... SET,
# set_config('app.encryption_key', '...')): reading it with current_setting() is fine.
KEY_SETTING_ASSIGNED = re.compile(
    r"SET\s+\"?app\.(encryption_key|decryption_keys)\"?\s*(=|TO)"
    r"|set_config\(\s*'app\.(encryption_key|decryption_keys)'\s*,\s*'",
    re.IGNORECASE,
)
_UNICODE_ESCAPE = re.compile(r"\\+u([0-9a-fA-F]{4})")
_ESCAPED_SPACE = re.compile(r"\\+[nrtbf]?")
_BACKSLASHES = re.compile(r"\\+")


def normalised_views(text: str) -> tuple[str, ...]:
    """`text` without whitespace and escape noise: one view, or two where escapes occur.

    The first drops escaped whitespace (JSON's "\\n" that splits a key across lines);
    the second keeps the letter after a backslash (a key that starts with b or f after
    a lone backslash). Both undo \\uXXXX and drop the remaining backslashes ("\\/").
    """
    if "\\" not in text:
        return ("".join(text.split()),)
    text = _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    without_escapes = "".join(_ESCAPED_SPACE.sub("", text).split())
    without_backslashes = "".join(_BACKSLASHES.sub("", text).split())
    return without_escapes, without_backslashes


@dataclass(frozen=True)
class _KeyNeedles:
    key_id: str
    secret: bytes
    hex: str
    base64: tuple[tuple[str, str], ...]  # (encoding, its text without padding)


class KeyFinder:
    """Finds the keyring's secrets in text or bytes, however encoded or split."""

    def __init__(self, keys: Iterable[Key]) -> None:
        self._needles: list[_KeyNeedles] = []
        for key in keys:
            secret = key.secret
            if secret is None:  # a purged key: nothing left to leak
                continue
            standard = base64.b64encode(secret).decode().rstrip("=")
            urlsafe = base64.urlsafe_b64encode(secret).decode().rstrip("=")
            encodings = [("base64", standard)]
            if urlsafe != standard:
                encodings.append(("base64url", urlsafe))
            self._needles.append(_KeyNeedles(key.id, secret, secret.hex(), tuple(encodings)))

    def __bool__(self) -> bool:
        return bool(self._needles)

    def in_text(self, text: str) -> list[tuple[str, str]]:
        """(key id, encoding) of every secret in `text`."""
        found: list[tuple[str, str]] = []
        views = normalised_views(text)
        lowered = [view.lower() for view in views]
        for needle in self._needles:
            if any(needle.hex in view for view in lowered):
                found.append((needle.key_id, "hex"))
            for encoding, encoded in needle.base64:
                if any(encoded in view for view in views):
                    found.append((needle.key_id, encoding))
        return found

    def in_bytes(self, data: bytes) -> list[tuple[str, str]]:
        """(key id, encoding) of every secret in binary data: raw, or as text."""
        found = [(n.key_id, "raw bytes") for n in self._needles if n.secret in data]
        return found + self.in_text(data.decode("latin-1"))


# -- message texts outside their ciphertext ------------------------------------------------

MIN_TEXT_CHARS = 8
_FRAME_MARK = "\x01"
_FRAME_SEARCH_CHARS = 100


def message_text(plaintext: str) -> str:
    """The message text of a decrypted content value, without its binding frame.

    The frame (message id and thread id) runs from a leading \\x01 to the next \\x01;
    it is dropped generically so this does not depend on the frame's version.
    """
    if plaintext.startswith(_FRAME_MARK):
        end = plaintext.find(_FRAME_MARK, 1, _FRAME_SEARCH_CHARS)
        if end != -1:
            return plaintext[end + 1 :]
    return plaintext


def text_forms(text: str) -> set[str]:
    """How a text may appear elsewhere: verbatim, JSON-escaped, as an SQL literal's body."""
    return {
        text,
        json.dumps(text, ensure_ascii=False)[1:-1],
        json.dumps(text)[1:-1],
        text.replace("'", "''"),
    }


class TextFinder:
    """Finds any of many texts (at least MIN_TEXT_CHARS long) in a haystack, in one pass.

    Indexed by each form's first MIN_TEXT_CHARS characters: the haystack's windows of
    that width are intersected with the index, and only the texts whose prefix occurs
    are compared, so the cost grows with the haystack, not with the number of texts.
    """

    def __init__(self, texts: Mapping[str, Iterable[str]]) -> None:
        self._by_prefix: dict[str, list[tuple[str, frozenset[str]]]] = defaultdict(list)
        for text, owners in texts.items():
            if len(text) < MIN_TEXT_CHARS:
                continue
            for form in text_forms(text):
                self._by_prefix[form[:MIN_TEXT_CHARS]].append((form, frozenset(owners)))

    def __bool__(self) -> bool:
        return bool(self._by_prefix)

    def owners_in(self, haystack: str) -> set[str]:
        """The owners (message ids) of every text found in `haystack`."""
        width = MIN_TEXT_CHARS
        windows = {haystack[at : at + width] for at in range(len(haystack) - width + 1)}
        found: set[str] = set()
        for prefix in windows & self._by_prefix.keys():
            for form, owners in self._by_prefix[prefix]:
                if form in haystack:
                    found |= owners
        return found


# -- the scan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DumpScan:
    """What verifying a dump found; `problems` empty means it keeps the promise.

    `unchecked` names the checks that could not run (without a keyring) and why;
    `decrypted` is how many messages were trial-decrypted (None: no keyring).
    """

    toc_entries: int
    messages: int
    tables: list[str]
    problems: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    decrypted: int | None = None
    large_objects: int = 0


NOT_CIPHERTEXT = "hold content that is not PGP ciphertext"
NOT_DECRYPTED = "do not decrypt with the keyring"
NOT_AS_WRITTEN = "decrypt but are not what the trigger writes"
_IDS_SHOWN = 3
_SAFE_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SAFE_ID = re.compile(r"[0-9a-fA-F-]{1,36}")  # a uuid (or an integer) and nothing else


def _some(ids: list[str]) -> str:
    shown = ", ".join(ids[:_IDS_SHOWN])
    return shown + (f" and {len(ids) - _IDS_SHOWN} more" if len(ids) > _IDS_SHOWN else "")


class _MessageCheck:
    """Per chat.messages row: proven ciphertext, and with a keyring decrypted."""

    def __init__(self, keyring: Keyring | None) -> None:
        self.keys = {key.id: key for key in keyring.keys} if keyring else None
        self.rows = 0
        self.decrypted = 0
        self.failures: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.texts: dict[str, list[str]] = defaultdict(list)

    def check(self, message_id: str, content: str | None) -> None:
        self.rows += 1
        if content is None:
            return  # no content is no plaintext (the schema makes it NOT NULL)
        try:
            armored = dearmor(content)
            key_id = _key_header(armored)
            packets = parse_packets(armored.data)
            require_encrypted(packets)
        except OpenPGPError as exc:
            self.failures[(NOT_CIPHERTEXT, str(exc))].append(message_id)
            return
        if self.keys is None:
            return
        try:
            plaintext = decrypt(packets, self._passphrase(key_id))
        except NotDecryptable as exc:
            self.failures[(NOT_DECRYPTED, str(exc))].append(message_id)
            return
        except OpenPGPError as exc:
            self.failures[(NOT_AS_WRITTEN, str(exc))].append(message_id)
            return
        self.decrypted += 1
        self.texts[message_text(plaintext.decode("utf-8", "replace"))].append(message_id)

    def _passphrase(self, key_id: str) -> bytes:
        assert self.keys is not None
        shown = key_id if _SAFE_KEY_ID.fullmatch(key_id) else "with a malformed id"
        key = self.keys.get(key_id)
        if key is None:
            raise NotDecryptable(f"they name key {shown}, which the keyring does not have")
        if key.secret is None:
            raise NotDecryptable(f"they name key {shown}, whose secret the keyring purged")
        return key.secret.hex().encode()  # the pgcrypto passphrase (Key.material)

    def problems(self) -> list[str]:
        return [
            f"{len(ids)} of {self.rows} row(s) of {MESSAGES} {family}: {reason} "
            f"(message id {_some(ids)})"
            for (family, reason), ids in self.failures.items()
        ]


def _key_header(armored: Armored) -> str:
    names = [name for name, _ in armored.headers]
    if names != [KEY_HEADER]:
        raise OpenPGPError(f"ASCII armor headers other than one {KEY_HEADER}")
    return armored.headers[0][1]


class _Findings:
    """Where each key's secret was found, once per key, encoding and place."""

    def __init__(self) -> None:
        self.places: dict[tuple[str, str], list[str]] = defaultdict(list)

    def add(self, found: list[tuple[str, str]], place: str) -> None:
        for key_id, encoding in found:
            if place not in self.places[(key_id, encoding)]:
                self.places[(key_id, encoding)].append(place)

    def problems(self) -> list[str]:
        return [
            f"the secret of key {key_id} is in the dump ({encoding}) in {_some(places)}"
            for (key_id, encoding), places in self.places.items()
        ]


def _schema_shape_problems(line: SchemaLine) -> list[str]:
    problems = []
    if KEY_SHAPED.search(line.text):
        problems.append(f"line {line.number}: a 64-hex-digit (key-shaped) value in the schema")
    if KEY_SHAPED_BASE64.search(line.text):
        problems.append(f"line {line.number}: a 32-byte base64 (key-shaped) value in the schema")
    if KEY_SETTING_ASSIGNED.search(line.text):
        problems.append(f"line {line.number}: an encryption key setting is given a value")
    return problems


def _bytea(value: str) -> bytes | None:
    # A bytea column's text form: \x then hex. Its bytes may hold text of their own.
    if value.startswith("\\x") and len(value) % 2 == 0:
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            return None
    return None


def _toc(path: Path) -> tuple[int, int]:
    """(entries, TABLE DATA entries) of the archive's table of contents."""
    listing = run_tool([tool("pg_restore"), "--list", str(path)])
    if listing.returncode != 0:
        raise ChatsecError(
            f"{path} is not a readable pg_dump archive: {first_error(listing.stderr)}"
        )
    toc = [ln for ln in listing.stdout.splitlines() if ln and not ln.startswith(";")]
    return len(toc), sum(1 for ln in toc if " TABLE DATA " in ln)


def _field(row: CopyRow, at: int) -> str | None:
    return row.fields[at] if 0 <= at < len(row.fields) else None


def _message_label(row: CopyRow, id_at: int) -> str:
    # Problems name messages by id; a tampered dump's id column could hold anything.
    value = _field(row, id_at)
    return value if value and _SAFE_ID.fullmatch(value) else f"on line {row.number}"


def _row_text(row: CopyRow) -> str:
    values = [value for value in row.fields if value is not None]
    decoded = [data.decode("latin-1") for v in values if (data := _bytea(v)) is not None]
    return "\t".join(values + decoded)


class _FirstPass:
    """Everything but the search for message texts, which needs them all decrypted first."""

    def __init__(self, keyring: Keyring | None) -> None:
        self.messages = _MessageCheck(keyring)
        self.keys = KeyFinder(keyring.keys if keyring else [])
        self.findings = _Findings()
        self.tables: list[str] = []
        self.large_objects: dict[str, bool] = {}  # OID -> searched only in part
        self.shape_problems: list[str] = []
        self.column_problems: list[str] = []
        self._schema: list[str] = []
        self._content_at = self._id_at = -1

    def read(self, items: Iterable[DumpItem]) -> None:
        for item in items:
            if isinstance(item, SchemaLine):
                self._schema.append(item.text)
                self.shape_problems += _schema_shape_problems(item)
            elif isinstance(item, CopyStart):
                self._copy_start(item)
            elif isinstance(item, CopyRow):
                self._copy_row(item)
            else:
                self._large_object(item)
        if self.keys:
            self.findings.add(self.keys.in_text("\n".join(self._schema)), "the schema text")

    def _copy_start(self, start: CopyStart) -> None:
        self.tables.append(start.table)
        if start.table != MESSAGES:
            return
        if CONTENT not in start.columns:
            self.column_problems.append(f"{MESSAGES} data has no {CONTENT} column")
            self._content_at = -1
            return
        self._content_at = start.columns.index(CONTENT)
        self._id_at = start.columns.index("id") if "id" in start.columns else -1

    def _copy_row(self, row: CopyRow) -> None:
        if self.keys:
            self.findings.add(
                self.keys.in_text(_row_text(row)), f"{row.table} data (line {row.number})"
            )
        if row.table == MESSAGES and self._content_at >= 0:
            self.messages.check(_message_label(row, self._id_at), _field(row, self._content_at))

    def _large_object(self, blob: LargeObject) -> None:
        # Declared (lo_create, no data) and written (lo_open ... lo_close): one object.
        if blob.data or blob.oid not in self.large_objects:
            self.large_objects[blob.oid] = blob.truncated
        if self.keys and blob.data:
            self.findings.add(self.keys.in_bytes(blob.data), f"large object {blob.oid}")

    def large_object_problems(self) -> list[str]:
        if not self.large_objects:
            return []
        oids = list(self.large_objects)
        problems = [
            f"{len(oids)} large object(s) in the dump (OID {_some(oids)}): large objects are "
            "storage outside row-level security and encryption"
        ]
        partly = [oid for oid, cut in self.large_objects.items() if cut]
        if partly:
            problems.append(
                f"large object(s) {_some(partly)} searched only in their first "
                f"{LARGE_OBJECT_SEARCH_BYTES >> 20} MiB"
            )
        return problems


def verify_dump(path: Path, keyring: Keyring | None = None) -> DumpScan:
    """Read a custom-format dump back in full: proven ciphertext, no key, no plaintext.

    Without a keyring the checks that need it are listed in `DumpScan.unchecked`.
    """
    toc_entries, table_data = _toc(path)
    first = _FirstPass(keyring)
    first.read(read_script(script_lines(path)))
    problems = first.findings.problems() + first.column_problems + first.messages.problems()
    if keyring is not None:
        texts = TextFinder(first.messages.texts)
        if texts:
            problems += _plaintext_problems(_find_texts(path, texts))
    problems += first.large_object_problems() + first.shape_problems
    copies = len(first.tables)
    if copies != table_data:
        problems.append(
            f"the script holds {copies} COPY block(s) but the archive lists {table_data} "
            "TABLE DATA entries: COPY text hidden in a function body or a comment?"
        )
    if MESSAGES not in first.tables:
        problems.append(f"no {MESSAGES} data in the dump: is this chatsec's chat database?")
    return DumpScan(
        toc_entries=toc_entries,
        messages=first.messages.rows,
        tables=first.tables,
        problems=problems,
        unchecked=[] if keyring else _unchecked(first.messages.rows),
        decrypted=first.messages.decrypted if keyring else None,
        large_objects=len(first.large_objects),
    )


# pg_dump's own comment lines only repeat names the statements hold; skipping them keeps
# its boilerplate from matching a message ("PostgreSQL database dump complete"). Exact
# forms only: a line of a multi-line string literal may start with "--" too.
_DUMP_COMMENT = re.compile(
    r"--|-- PostgreSQL database dump( complete)?|-- Dumped (from database|by pg_dump) version .*"
    r"|-- (Data for )?Name: .*; Type: .*; Schema: .*; Owner: .*"
)


def _find_texts(path: Path, texts: TextFinder) -> dict[str, set[str]]:
    """Second pass: place -> ids of the messages whose text is there in plaintext."""
    found: dict[str, set[str]] = defaultdict(set)
    schema: list[str] = []
    for item in read_script(script_lines(path)):
        if isinstance(item, SchemaLine):
            if not _DUMP_COMMENT.fullmatch(item.text):
                schema.append(item.text)
        elif isinstance(item, CopyRow):
            for column, value in zip(item.columns, item.fields, strict=False):
                if value is None or (item.table == MESSAGES and column == CONTENT):
                    continue
                data = _bytea(value)
                haystack = value if data is None else data.decode("utf-8", "replace")
                found[f"{item.table}.{column}"] |= texts.owners_in(haystack)
        elif isinstance(item, LargeObject) and item.data:
            found[f"large object {item.oid}"] |= texts.owners_in(
                item.data.decode("utf-8", "replace")
            )
    found["the schema text (comments, function bodies, defaults)"] |= texts.owners_in(
        "\n".join(schema)
    )
    return {place: ids for place, ids in found.items() if ids}


def _plaintext_problems(found: dict[str, set[str]]) -> list[str]:
    return [
        f"the text of {len(ids)} message(s) is in plaintext in {place} "
        f"(message id {_some(sorted(ids))})"
        for place, ids in found.items()
    ]


def _unchecked(messages: int) -> list[str]:
    return [
        f"decryption: {messages} message(s) not trial-decrypted (no keyring); their OpenPGP "
        "packets were checked, but compression or a wrong key inside the encryption "
        "cannot be seen without the key",
        "plaintext elsewhere: message texts not searched for outside "
        f"{MESSAGES}.{CONTENT} (no keyring to decrypt them)",
        "key material: the keyring's secrets not searched for (no keyring); only "
        "key-shaped values in the schema text were (row data holds key-shaped verifiers)",
    ]
