"""Accepted findings: `--ignore CHECK_ID[:OBJECT]` and `chatsec-audit.toml`, applied after the run.

The checks know nothing about this module. `apply_allowlist` marks the findings an entry
accepts as suppressed (they stay in the report, with the entry's reason) and recomputes
each check's status; suppressed findings never reach `--fail-on`. Objects match exactly:
a glob would silently accept findings about objects nobody has reviewed yet.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path

from chatsec.audit.finding import CheckResult, Finding, Suppression
from chatsec.audit.registry import all_checks
from chatsec.audit.runner import COULD_NOT_RUN_OBJECT, AuditReport
from chatsec.errors import ChatsecError

DEFAULT_FILE = Path("chatsec-audit.toml")
_ENTRY_KEYS = frozenset({"check", "object", "reason", "expires"})
_COMMAND_LINE_REASON = "accepted on the command line (--ignore)"


@dataclass(frozen=True)
class AllowEntry:
    """One accepted finding (or every finding of a check when `object` is None)."""

    check_id: str
    object: str | None
    reason: str
    source: str  # where the entry is written, for reports and error messages
    expires: date | None = None

    def describe(self) -> str:
        return self.check_id if self.object is None else f"{self.check_id}:{self.object}"

    def applies_on(self, day: date) -> bool:
        # `expires` is the last day the entry applies.
        return self.expires is None or day <= self.expires

    def matches(self, finding: Finding) -> bool:
        if finding.check_id != self.check_id or finding.object == COULD_NOT_RUN_OBJECT:
            return False
        return self.object is None or self.object == finding.object

    def suppression(self) -> Suppression:
        return Suppression(self.reason, self.source, self.expires)


def known_check_ids() -> frozenset[str]:
    """Every registered check id: what an entry may name."""
    return frozenset(c.id for c in all_checks())


def _require_known(check_id: str, known: Collection[str], where: str) -> None:
    if check_id not in known:
        raise ChatsecError(
            f"{where}: unknown check id {check_id!r} (see chatsec audit --list-checks)"
        )


def parse_ignore_option(value: str, known: Collection[str]) -> AllowEntry:
    """`CHECK_ID` or `CHECK_ID:OBJECT` (split at the first colon: ids have none)."""
    check_id, colon, obj = value.partition(":")
    where = f"--ignore {value}"
    if not check_id:
        raise ChatsecError(f"{where}: expected CHECK_ID or CHECK_ID:OBJECT")
    if colon and not obj:
        raise ChatsecError(f"{where}: empty object after ':' (omit it to accept the whole check)")
    _require_known(check_id, known, where)
    return AllowEntry(check_id, obj if colon else None, _COMMAND_LINE_REASON, where)


def _optional_text(entry: dict[str, object], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ChatsecError(f"{where}: {key!r} must be a non-empty string")
    return value


def _required_text(entry: dict[str, object], key: str, where: str) -> str:
    value = _optional_text(entry, key, where)
    if value is None:
        raise ChatsecError(f"{where}: missing {key!r}")
    return value


def _expiry(value: object, where: str) -> date | None:
    if value is None:
        return None
    # tomllib reads `expires = 2026-12-31` as a date and a datetime as its subclass.
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ChatsecError(f"{where}: 'expires' must be a date like 2026-12-31, not {value!r}")


def _parse_entry(raw: object, where: str, known: Collection[str]) -> AllowEntry:
    if not isinstance(raw, dict):
        raise ChatsecError(f"{where}: expected a table ([[ignore]])")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        # A misspelt `object` would otherwise widen the entry to the whole check.
        raise ChatsecError(
            f"{where}: unknown key(s) {', '.join(unknown)} (allowed: check, object, reason, "
            "expires)"
        )
    check_id = _required_text(raw, "check", where)
    reason = _required_text(raw, "reason", where)
    _require_known(check_id, known, where)
    obj = _optional_text(raw, "object", where)
    return AllowEntry(check_id, obj, reason.strip(), where, _expiry(raw.get("expires"), where))


def load_allowlist_file(path: Path, known: Collection[str]) -> list[AllowEntry]:
    """The `[[ignore]]` entries of `path`; anything malformed is a ChatsecError (exit 2)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ChatsecError(f"cannot read allowlist {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ChatsecError(f"{path}: not valid TOML: {exc}") from None
    extra = sorted(set(data) - {"ignore"})
    if extra:
        raise ChatsecError(f"{path}: unknown key(s) {', '.join(extra)} (expected [[ignore]])")
    entries = data.get("ignore", [])
    if not isinstance(entries, list):
        raise ChatsecError(f"{path}: 'ignore' must be an array of tables ([[ignore]])")
    return [
        _parse_entry(raw, f"{path}, entry {number}", known)
        for number, raw in enumerate(entries, start=1)
    ]


def resolve_allowlist_file(explicit: Path | None) -> Path | None:
    """`--ignore-file` when given (it must exist), else ./chatsec-audit.toml if present."""
    if explicit is not None:
        return explicit
    return DEFAULT_FILE if DEFAULT_FILE.is_file() else None


def build_allowlist(ignores: Iterable[str], file: Path | None) -> list[AllowEntry]:
    """Command-line entries, then the file's, validated against the registered check ids."""
    known = known_check_ids()
    entries = [parse_ignore_option(value, known) for value in ignores]
    if file is not None:
        entries += load_allowlist_file(file, known)
    return entries


def _entry_for(finding: Finding, entries: Sequence[AllowEntry]) -> AllowEntry | None:
    # An entry naming the object explains this finding better than a check-wide one.
    matching = [e for e in entries if e.matches(finding)]
    return next((e for e in matching if e.object is not None), None) or next(iter(matching), None)


def _suppress(finding: Finding, entries: Sequence[AllowEntry]) -> Finding:
    entry = None if finding.suppressed else _entry_for(finding, entries)
    if entry is None:
        return finding
    return replace(finding, suppression=entry.suppression())


def expiry_notice(entry: AllowEntry) -> str:
    return (
        f"allowlist entry {entry.describe()} ({entry.source}) expired on "
        f"{entry.expires}: its findings count again"
    )


def apply_allowlist(
    report: AuditReport, entries: Sequence[AllowEntry], today: date | None = None
) -> None:
    """Mark accepted findings suppressed, recompute statuses, add a notice per expired entry.

    `today` defaults to the (UTC) day the audit started.
    """
    day = today or report.started_at.date()
    active = [e for e in entries if e.applies_on(day)]
    report.notices.extend(expiry_notice(e) for e in entries if not e.applies_on(day))
    for result in report.results:
        if result.status == "skipped":
            continue
        result.findings = [_suppress(f, active) for f in result.findings]
        result.status = CheckResult.status_for(result.findings)
