"""What the benchmark scripts share: running in the repository's venv, bench/pixel's helpers,
and throwaway PostgreSQL databases. Standard library only at import time, so a script can
import it before it has re-executed itself in the venv."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import uuid
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
MAILSEEN = VENV / "bin" / "mailseen"


def use_repo_venv(script: str) -> None:
    """Re-execute ``script`` with the repository's venv (if it is not the running Python
    already), and put the checkout's ``src`` first on the path."""
    python = VENV / "bin" / "python"
    if python.exists() and Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(python, [str(python), script, *sys.argv[1:]])
    sys.path.insert(0, str(REPO / "src"))


def load_pixel_bench() -> ModuleType:
    """bench/pixel is a script (no .py): loaded as a module for its process and wrk helpers."""
    loader = importlib.machinery.SourceFileLoader("bench_pixel", str(REPO / "bench" / "pixel"))
    spec = importlib.util.spec_from_loader("bench_pixel", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_pixel"] = module  # its dataclasses look themselves up there
    loader.exec_module(module)
    return module


def create_pg_database(pg_url: str, prefix: str, error: type[Exception]) -> tuple[str, str]:
    """A fresh database next to the one ``pg_url`` names: (its URL, its name). Raises
    ``error`` when it cannot be made."""
    from sqlalchemy import create_engine, text

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        raise error(f"cannot create a database at {pg_url}: {exc}") from exc
    finally:
        admin.dispose()
    return pg_url.rsplit("/", 1)[0] + f"/{name}", name


def drop_pg_database(pg_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
