"""Storage: the only package that knows SQLAlchemy. Callers get plain records back (the
vocabulary in :mod:`mailseen.records`), never an ORM object."""

from .db import Database
from .store import Store

__all__ = ["Database", "Store"]
