"""Find the checks: every public module of chatsec.audit.checks exposing CHECK."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable

from chatsec.audit import checks as checks_package
from chatsec.audit.check import CATEGORIES, Check
from chatsec.errors import ChatsecError


def all_checks() -> list[Check]:
    """Every check, in report order (category, then id)."""
    found: dict[str, Check] = {}
    for info in pkgutil.iter_modules(checks_package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{checks_package.__name__}.{info.name}")
        check = getattr(module, "CHECK", None)
        if not isinstance(check, Check):
            raise RuntimeError(f"audit check module {info.name} has no CHECK = Check(...)")
        # The file name is the id: a reviewer finds a check from its id without searching.
        if check.id.replace("-", "_") != info.name:
            raise RuntimeError(f"audit check {check.id} lives in {info.name}.py")
        if check.category not in CATEGORIES:
            raise RuntimeError(f"audit check {check.id}: unknown category {check.category}")
        if check.id in found:
            raise RuntimeError(f"audit check id {check.id} is defined twice")
        found[check.id] = check
    return sorted(found.values(), key=lambda c: (CATEGORIES.index(c.category), c.id))


def select_checks(ids: Iterable[str] | None) -> list[Check]:
    """The checks named by `ids` (all when empty); an unknown id is a usage error."""
    checks = all_checks()
    wanted = list(ids or [])
    if not wanted:
        return checks
    known = {c.id for c in checks}
    unknown = [i for i in wanted if i not in known]
    if unknown:
        raise ChatsecError(
            f"unknown check id(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    return [c for c in checks if c.id in set(wanted)]
