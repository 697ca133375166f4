"""Imports point one way: edges -> services -> storage/transports -> core -> records/config/
errors, and each third-party dependency is known to one package only. The records (the
vocabulary every layer speaks) import nothing of mailseen's. The clock (clock.py) sits beside
errors.py at the bottom: any layer may take one passed in, and it imports no layer."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "mailseen"

# package -> packages it must not import
FORBIDDEN = {
    "records": {"core", "storage", "services", "web", "transports", "cli", "config",
                "receivers", "errors"},
    "core": {"storage", "services", "web", "transports", "cli", "config"},
    "storage": {"services", "web", "transports", "cli"},
    "transports": {"services", "web", "cli"},
    "services": {"web", "cli", "receivers"},
    # The edges go through services only: never storage, whose records they still speak.
    "web": {"cli", "receivers", "storage"},
    "receivers": {"web", "cli", "storage"},
    "cli": {"storage"},
    "clock": {"core", "storage", "services", "web", "transports", "cli", "config", "errors",
              "receivers", "records"},
}
# The three web edges stand apart; web/app.py puts them side by side.
WEB_EDGES = ("pixel", "api", "site")
EDGES = ("web", "receivers", "cli")
# third-party module -> the only package allowed to import it
OWNERS = {"sqlalchemy": {"storage"}, "alembic": {"storage"}, "aiosmtplib": {"transports"},
          "fastapi": {"web"}, "starlette": {"web"}, "uvicorn": {"web", "cli"},
          "click": {"cli"}, "cryptography": {"services"}, "argon2": {"services"},
          "jinja2": {"web"}, "nh3": {"web"}, "aioimaplib": {"receivers"},
          "aiosmtpd": {"receivers"}, "ada_url": {"core"},
          "tinycss2": {"core"}}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = path.relative_to(PKG).parts[: -node.level]
                found.add(".".join(("mailseen", *base, *(node.module or "").split(".")))
                          .rstrip("."))
            elif node.module:
                found.add(node.module)
    return found


def _package(path: Path) -> str:
    rel = path.relative_to(PKG).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def test_imports_point_one_way() -> None:
    bad = []
    for path in PKG.rglob("*.py"):
        pkg = _package(path)
        for mod in _imports(path):
            parts = mod.split(".")
            if parts[0] != "mailseen" or len(parts) < 2:
                continue
            forbidden = FORBIDDEN.get(pkg, set())
            if parts[1] in forbidden or ".".join(parts[1:3]) in forbidden:
                bad.append(f"{path.relative_to(PKG)} imports {mod}")
    assert bad == []


def test_the_web_edges_do_not_import_each_other() -> None:
    bad = []
    for edge in WEB_EDGES:
        for path in (PKG / "web" / edge).rglob("*.py"):
            for mod in _imports(path):
                parts = mod.split(".")
                if parts[:2] == ["mailseen", "web"] and len(parts) > 2 and (
                        parts[2] in WEB_EDGES and parts[2] != edge):
                    bad.append(f"{path.relative_to(PKG)} imports {mod}")
    assert bad == []


def test_edges_reach_storage_only_through_services() -> None:
    """An edge that held the instance could still call ``instance.store`` without importing
    storage: no edge names the store at all."""
    bad = []
    for path in PKG.rglob("*.py"):
        if _package(path) not in EDGES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("store", "db"):
                bad.append(f"{path.relative_to(PKG)}:{node.lineno} uses .{node.attr}")
    assert bad == []


def test_transports_are_handed_envelopes_not_records() -> None:
    """What leaves is what the send pipeline decided: a transport sees the envelope and the
    bytes, never a stored message (whose headers could name other recipients)."""
    bad = []
    for path in (PKG / "transports").rglob("*.py"):
        for mod in _imports(path):
            if mod.startswith("mailseen.records"):
                continue
            if mod.startswith("mailseen.") and mod.split(".")[1] not in ("errors",):
                bad.append(f"{path.relative_to(PKG)} imports {mod}")
        text = path.read_text()
        for name in ("MessageRecord", "MailboxRecord", "Claim"):
            if name in text:
                bad.append(f"{path.relative_to(PKG)} names {name}")
    assert bad == []


def test_each_dependency_is_known_to_one_place() -> None:
    bad = []
    for path in PKG.rglob("*.py"):
        pkg = _package(path)
        for mod in _imports(path):
            owners = OWNERS.get(mod.split(".")[0])
            if owners is not None and pkg not in owners:
                bad.append(f"{path.relative_to(PKG)} imports {mod}")
    assert bad == []
