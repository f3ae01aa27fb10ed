"""The shared design library: named designs with append-only revisions.

Every :meth:`Library.save` adds a new revision (``1, 2, 3, …`` per design) with
author, message and a UTC timestamp; nothing is ever overwritten. A revision
stores the design as canonical YAML (``Design.to_yaml()``, every field, fixed
order) plus the SHA-256 of that text, so two revisions with the same content
have the same hash. Designs are validated before they are stored; a
:class:`~backend.errors.DesignError` propagates unchanged.

Storage is SQLAlchemy 2:

* default: SQLite in ``$BACKEND_DATA_DIR/library.db`` (``./data`` when unset),
  WAL journal (readers never block the writer), a 30 s busy timeout, foreign
  keys on, and ``BEGIN IMMEDIATE`` transactions so a writer takes the lock
  up front instead of failing half-way through an upgrade from read to write;
* any SQLAlchemy URL through ``BACKEND_DATABASE_URL``, e.g.
  ``postgresql+psycopg://user:pass@db/designs`` for a team server.

Revision numbers are allocated as ``max + 1`` inside the writing transaction,
with the design row locked (``SELECT … FOR UPDATE`` where the database has
row locks; SQLite's ``BEGIN IMMEDIATE`` serialises writers). The unique
constraint ``(design_id, revision)`` is the backstop: a collision is retried,
never stored twice.

Deleting needs an explicit ``confirm=True``. This module never imports
streamlit or torch (the diff imports the analysis lazily, when present).
"""
from __future__ import annotations

import os
import random
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    func,
    or_,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from ..errors import DesignError, short_repr
from ..spec import Design, load_design, parse_design_text
from .content import canonical_yaml, content_hash
from .diff import diff_designs

DEFAULT_DATA_DIR = "data"
DB_FILE = "library.db"
MAX_NAME = 200
MAX_AUTHOR = 200
MAX_MESSAGE = 10_000
MAX_REVISION = 2**31 - 1  # fits every backend's INTEGER column
SQLITE_BUSY_TIMEOUT_S = 30.0
SAVE_ATTEMPTS = 50  # retries of a colliding / locked save before giving up


def database_url() -> str:
    """``BACKEND_DATABASE_URL``, else SQLite under ``BACKEND_DATA_DIR`` (default ./data)."""
    url = os.environ.get("BACKEND_DATABASE_URL", "").strip()
    if url:
        return url
    data_dir = Path(os.environ.get("BACKEND_DATA_DIR", DEFAULT_DATA_DIR))
    return f"sqlite:///{(data_dir / DB_FILE).as_posix()}"


# ---------------------------------------------------------------------------
# Schema


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; pass an aware UTC datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class DesignRow(Base):
    __tablename__ = "library_designs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    revisions: Mapped[list["RevisionRow"]] = relationship(back_populates="design", cascade="all, delete-orphan", passive_deletes=True)


class RevisionRow(Base):
    __tablename__ = "library_revisions"
    __table_args__ = (UniqueConstraint("design_id", "revision", name="uq_library_revision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    design_id: Mapped[int] = mapped_column(ForeignKey("library_designs.id", ondelete="CASCADE"), nullable=False, index=True)
    revision: Mapped[int] = mapped_column(Integer, nullable=False)
    author: Mapped[str] = mapped_column(String(MAX_AUTHOR), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")  # copy of design.description, for search
    design_yaml: Mapped[str] = mapped_column(Text, nullable=False)
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    design: Mapped[DesignRow] = relationship(back_populates="revisions")


# ---------------------------------------------------------------------------
# Plain results (what callers get; no ORM objects leak out)


@dataclass(frozen=True)
class RevisionInfo:
    name: str
    revision: int
    author: str
    message: str
    created_at: datetime
    content_hash: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        return d


@dataclass(frozen=True)
class Revision(RevisionInfo):
    design_yaml: str

    @property
    def design(self) -> Design:
        return parse_design_text(self.design_yaml, "yaml", source=f"{self.name}@{self.revision}")


@dataclass(frozen=True)
class DesignSummary:
    name: str
    description: str
    n_revisions: int
    created_at: datetime
    latest: RevisionInfo

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "n_revisions": self.n_revisions,
                "created_at": self.created_at.isoformat(), "latest": self.latest.to_dict()}


def _check_text(path: str, value: Any, limit: int, *, required: bool) -> str:
    if not isinstance(value, str):
        raise DesignError(path, f"must be a string, got {short_repr(value)}")
    value = value.strip() if path != "message" else value
    if required and not value:
        raise DesignError(path, "must not be empty")
    if len(value) > limit:
        raise DesignError(path, f"must have at most {limit} characters, got {len(value)}")
    if "\x00" in value:
        raise DesignError(path, "must not contain NUL characters")
    return value


# ---------------------------------------------------------------------------
# Engine


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        database = url.split("///", 1)[1] if "///" in url else ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own
            # deferred BEGIN would make writers fail on lock upgrade).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")  # durable across process kills in WAL mode
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Writers ask for IMMEDIATE (take the write lock now, wait on the
            # busy timeout); readers get a plain snapshot transaction.
            conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'DEFERRED')}")

        return engine
    return create_engine(url, pool_pre_ping=True)


def _is_transient(exc: Exception) -> bool:
    text = str(getattr(exc, "orig", exc)).lower()
    return any(s in text for s in ("database is locked", "database is busy", "deadlock", "could not serialize", "busy"))


# ---------------------------------------------------------------------------
# The library


class Library:
    """A design library on one database. Thread-safe; one per process is plenty."""

    def __init__(self, url: Optional[str] = None):
        self.url = url or database_url()
        self.engine = _make_engine(self.url)
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._create_schema()

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _create_schema(self) -> None:
        # Several processes may open a fresh database at once: a lost race on
        # CREATE TABLE is retried (the next create_all sees the tables).
        for attempt in range(10):
            try:
                with self._writer.begin() as conn:
                    Base.metadata.create_all(conn)
                return
            except (OperationalError, IntegrityError, ProgrammingError) as exc:
                # PostgreSQL: "relation already exists" / duplicate type (ProgrammingError, IntegrityError)
                if attempt == 9 or not (_is_transient(exc) or "exist" in str(exc).lower() or isinstance(exc, IntegrityError)):
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _session(self, *, write: bool = False) -> Session:
        return Session(self._writer if write else self.engine, expire_on_commit=False)

    # ---- writing ----

    def save(self, design: Union[Design, dict, str, Path], *, author: str, message: str = "", name: Optional[str] = None) -> RevisionInfo:
        """Validate ``design`` and store it as the next revision of ``name`` (default: the design's name)."""
        design = load_design(design)  # DesignError propagates
        from ..plan import resolve_plan

        resolve_plan(design)  # the plan must resolve too: a stored design always opens
        name = _check_text("name", design.name if name is None else name, MAX_NAME, required=True)
        author = _check_text("author", author, MAX_AUTHOR, required=True)
        message = _check_text("message", message, MAX_MESSAGE, required=False)
        text = canonical_yaml(design)
        digest = content_hash(text)
        last_exc: Optional[Exception] = None
        for attempt in range(SAVE_ATTEMPTS):
            try:
                return self._save_once(name, author, message, design.description, text, digest)
            except IntegrityError as exc:  # lost a race on the name or the revision number
                last_exc = exc
            except OperationalError as exc:
                if not _is_transient(exc):
                    raise
                last_exc = exc
            time.sleep(random.uniform(0.0, 0.02 * min(attempt + 1, 10)))
        raise DesignError("library", f"could not save {name!r} after {SAVE_ATTEMPTS} attempts: {last_exc}")

    def _save_once(self, name: str, author: str, message: str, description: str, text: str, digest: str) -> RevisionInfo:
        now = datetime.now(timezone.utc)
        with self._session(write=True) as s, s.begin():
            row = s.scalars(select(DesignRow).where(DesignRow.name == name).with_for_update()).one_or_none()
            if row is None:
                row = DesignRow(name=name, created_at=now)
                s.add(row)
                s.flush()  # IntegrityError here = another writer created it; retried
            last = s.scalar(select(func.max(RevisionRow.revision)).where(RevisionRow.design_id == row.id)) or 0
            rev = RevisionRow(design_id=row.id, revision=last + 1, author=author, message=message, created_at=now,
                              description=description, design_yaml=text, content_hash=digest)
            s.add(rev)
            s.flush()
            info = _info(name, rev)
        return info

    def delete(self, name: str, *, confirm: bool = False) -> int:
        """Delete ``name`` and all its revisions; returns how many revisions went. Needs ``confirm=True``."""
        if confirm is not True:
            raise DesignError("delete", f"refusing to delete {name!r} without explicit confirmation")
        with self._session(write=True) as s, s.begin():
            row = self._design_row(s, name)
            n = s.scalar(select(func.count()).select_from(RevisionRow).where(RevisionRow.design_id == row.id)) or 0
            s.delete(row)
        return int(n)

    # ---- reading ----

    def _design_row(self, s: Session, name: str) -> DesignRow:
        row = s.scalars(select(DesignRow).where(DesignRow.name == name)).one_or_none()
        if row is None:
            raise DesignError(name, "no such design in the library (see `python -m backend library list`)")
        return row

    def list(self, search: Optional[str] = None) -> list[DesignSummary]:
        """Every design with its latest revision, newest activity first; ``search`` filters (see :meth:`search`)."""
        latest = (select(RevisionRow.design_id, func.max(RevisionRow.revision).label("rev"), func.count().label("n"))
                  .group_by(RevisionRow.design_id).subquery())
        q = (select(DesignRow, RevisionRow, latest.c.n)
             .join(latest, latest.c.design_id == DesignRow.id)
             .join(RevisionRow, (RevisionRow.design_id == DesignRow.id) & (RevisionRow.revision == latest.c.rev)))
        if search:
            needle = f"%{_escape_like(search.strip().lower())}%"
            # Any revision's author matches too (who worked on it), not only the latest's.
            authors = select(RevisionRow.design_id).where(func.lower(RevisionRow.author).like(needle, escape="\\"))
            q = q.where(or_(func.lower(DesignRow.name).like(needle, escape="\\"),
                            func.lower(RevisionRow.description).like(needle, escape="\\"),
                            DesignRow.id.in_(authors)))
        with self._session() as s:
            rows = s.execute(q).all()
            out = [DesignSummary(name=d.name, description=r.description, n_revisions=int(n), created_at=d.created_at,
                                 latest=_info(d.name, r)) for d, r, n in rows]
        out.sort(key=lambda x: (x.latest.created_at, x.name), reverse=True)
        return out

    def search(self, query: str) -> list[DesignSummary]:
        """Case-insensitive substring match on name, latest description, or any revision's author."""
        return self.list(search=query)

    def names(self) -> list[str]:
        with self._session() as s:
            return list(s.scalars(select(DesignRow.name).order_by(DesignRow.name)))

    def revisions(self, name: str) -> list[RevisionInfo]:
        """Every revision of ``name``, oldest first."""
        with self._session() as s:
            row = self._design_row(s, name)
            revs = s.scalars(select(RevisionRow).where(RevisionRow.design_id == row.id).order_by(RevisionRow.revision))
            return [_info(name, r) for r in revs]

    def get(self, name: str, revision: Optional[int] = None) -> Revision:
        """One revision (default: the latest), with its YAML."""
        with self._session() as s:
            row = self._design_row(s, name)
            q = select(RevisionRow).where(RevisionRow.design_id == row.id)
            if revision is None:
                q = q.order_by(RevisionRow.revision.desc()).limit(1)
            elif isinstance(revision, bool) or not isinstance(revision, int) or not 1 <= revision <= MAX_REVISION:
                # before the query: a huge int overflows the database's INTEGER
                raise DesignError(f"{name}@{short_repr(revision, 24)}", f"revision must be an integer in [1, {MAX_REVISION}]")
            else:
                q = q.where(RevisionRow.revision == revision)
            r = s.scalars(q).first()
            if r is None:
                have = s.scalar(select(func.max(RevisionRow.revision)).where(RevisionRow.design_id == row.id))
                raise DesignError(f"{name}@{revision}", f"no such revision (revisions 1..{have})")
            return Revision(**asdict(_info(name, r)), design_yaml=r.design_yaml)

    def load(self, name: str, revision: Optional[int] = None) -> Design:
        return self.get(name, revision).design

    def iter_all(self) -> Iterator[Revision]:
        """Every stored revision (for integrity checks and backups)."""
        with self._session() as s:
            for d, r in s.execute(select(DesignRow, RevisionRow).join(RevisionRow).order_by(DesignRow.name, RevisionRow.revision)):
                yield Revision(**asdict(_info(d.name, r)), design_yaml=r.design_yaml)

    def diff(self, name: str, rev_a: int, rev_b: int, *, name_b: Optional[str] = None, seq_len: Optional[int] = None) -> dict[str, Any]:
        """Differences from ``name@rev_a`` to ``(name_b or name)@rev_b``: see :func:`diff_designs`."""
        a = self.get(name, rev_a)
        b = self.get(name_b or name, rev_b)
        out = diff_designs(a.design, b.design, seq_len=seq_len)
        out["a"] = a.to_dict()
        out["b"] = b.to_dict()
        for side in ("a", "b"):
            out[side].pop("design_yaml", None)
        return out


def _info(name: str, r: RevisionRow) -> RevisionInfo:
    return RevisionInfo(name=name, revision=r.revision, author=r.author, message=r.message, created_at=r.created_at, content_hash=r.content_hash)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_LIBRARIES: dict[str, Library] = {}


def get_library(url: Optional[str] = None) -> Library:
    """A process-wide :class:`Library` per URL (engines are pooled and thread-safe)."""
    url = url or database_url()
    lib = _LIBRARIES.get(url)
    if lib is None:
        lib = _LIBRARIES[url] = Library(url)
    return lib
