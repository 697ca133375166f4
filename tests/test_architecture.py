"""Imports point one way: edges -> services -> storage/transports -> core -> config/errors,
and each third-party dependency is known to one package only."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "mailseen"

# package -> packages it must not import
FORBIDDEN = {
    "core": {"storage", "services", "web", "transports", "cli", "config"},
    "storage": {"services", "web", "transports", "cli"},
    "transports": {"services", "web", "cli"},
    "services": {"web", "cli", "receivers"},
    "web": {"cli", "receivers"},
    "receivers": {"web", "cli"},
}
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
            if parts[0] == "mailseen" and len(parts) > 1 and parts[1] in FORBIDDEN.get(pkg, ()):
                bad.append(f"{path.relative_to(PKG)} imports {mod}")
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
