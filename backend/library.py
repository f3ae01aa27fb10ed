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

import hashlib
import json
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

from .errors import DesignError, short_repr
from .spec import Design, load_design, parse_design_text

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


def canonical_yaml(design: Design) -> str:
    """Every field in the model's field order: equal designs give equal text.

    The text must load back to the same design; where the full dump does not
    (a validator that rejects an explicitly written default), the form
    without defaults is stored instead.
    """
    for exclude_defaults in (False, True):
        text = design.to_yaml(exclude_defaults=exclude_defaults)
        try:
            if parse_design_text(text, "yaml") == design:
                return text
        except DesignError:
            pass
    raise DesignError("library", f"design {design.name!r} does not survive a YAML round trip; please report this")


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
        from .plan import resolve_plan

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


# ---------------------------------------------------------------------------
# Diff


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        if not value and prefix:
            out[prefix] = {}
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def design_field_diff(a: Design, b: Design) -> list[dict[str, Any]]:
    """``[{"field", "a", "b"}]`` for every leaf that differs (dotted paths; missing = None)."""
    fa, fb = _flatten(a.to_dict()), _flatten(b.to_dict())
    out = []
    for key in list(fa) + [k for k in fb if k not in fa]:
        va, vb = fa.get(key), fb.get(key)
        if va != vb:
            out.append({"field": key, "a": va, "b": vb})
    return out


def plan_diff(a: Design, b: Design) -> dict[str, Any]:
    """Per executed layer, keyed by (stack, index): changed, added and removed layers."""
    from .plan import resolve_plan

    pa, pb = resolve_plan(a), resolve_plan(b)
    la = {(x.stack, x.index): x.to_dict() for x in pa.layers}
    lb = {(x.stack, x.index): x.to_dict() for x in pb.layers}
    changed, added, removed = [], [], []
    for key in list(la) + [k for k in lb if k not in la]:
        xa, xb = la.get(key), lb.get(key)
        if xa is None:
            added.append(xb)
        elif xb is None:
            removed.append(xa)
        elif xa != xb:
            fields = {k: {"a": xa[k], "b": xb[k]} for k in xa if xa[k] != xb.get(k)}
            changed.append({"stack": key[0], "index": key[1], "changes": fields})
    depth = {"a": {s: st.depth for s, st in pa.stacks.items()}, "b": {s: st.depth for s, st in pb.stacks.items()}}
    return {"depth": depth, "changed": changed, "added": added, "removed": removed,
            "warnings": {"a": list(pa.warnings), "b": list(pb.warnings)}}


# Headline numbers taken from the analysis report (DESIGN.md section 6 names).
HEADLINE_KEYS = ("params.total", "params.unique", "params.embedding", "flops.forward", "flops.forward_causal",
                 "flops.training", "memory.weights_bytes", "memory.kv_cache_bytes_per_token")


def _analyse(design: Design, seq_len: Optional[int]) -> dict[str, Any]:
    """The analysis report as a dict; raises ImportError while backend.analysis does not exist yet."""
    import importlib

    mod = importlib.import_module(".analysis", __package__)
    for fname in ("analyze_design", "analyze", "analyse_design", "analyse", "report"):
        fn = getattr(mod, fname, None)
        if callable(fn):
            break
    else:
        raise ImportError("backend.analysis has no analyze function")
    try:
        result = fn(design, seq_len=seq_len) if seq_len else fn(design)
    except TypeError:
        result = fn(design)
    if hasattr(result, "to_dict"):
        result = result.to_dict()
    if not isinstance(result, dict):
        raise ImportError(f"backend.analysis.{fname} returned {type(result).__name__}, not a report dict")
    return result


def _headline(report: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key in HEADLINE_KEYS:
        v: Any = report
        for part in key.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if v is not None:
            out[key] = v
    return out


def numbers_diff(a: Design, b: Design, seq_len: Optional[int] = None) -> dict[str, Any]:
    """Headline numbers of both sides with the change; ``note`` says why they are missing."""
    try:
        ha, hb = _headline(_analyse(a, seq_len)), _headline(_analyse(b, seq_len))
    except ImportError as exc:
        return {"available": False, "note": f"numbers not available (analysis not importable: {exc}); plan diff only", "rows": []}
    except DesignError as exc:
        return {"available": False, "note": f"numbers not available: {exc}", "rows": []}
    except Exception as exc:  # noqa: BLE001 - an analysis bug must not break the plan diff
        return {"available": False, "note": f"numbers not available (analysis failed: {type(exc).__name__}: {exc}); plan diff only", "rows": []}
    rows = []
    for key in HEADLINE_KEYS:
        va, vb = ha.get(key), hb.get(key)
        if va is None and vb is None:
            continue
        delta = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
        rel = (delta / va) if delta is not None and va else None
        rows.append({"metric": key, "a": va, "b": vb, "delta": delta, "relative": rel})
    return {"available": True, "note": "", "rows": rows}


def diff_designs(a: Design, b: Design, *, seq_len: Optional[int] = None, numbers: bool = True) -> dict[str, Any]:
    """Design field differences, plan differences per executed layer, and headline numbers."""
    out: dict[str, Any] = {"same_content": content_hash(canonical_yaml(a)) == content_hash(canonical_yaml(b)),
                           "fields": design_field_diff(a, b)}
    try:
        out["plan"] = plan_diff(a, b)
    except DesignError as exc:  # a stored design the current registry no longer resolves
        out["plan"] = {"error": str(exc), "changed": [], "added": [], "removed": []}
    out["numbers"] = numbers_diff(a, b, seq_len) if numbers else {"available": False, "note": "not requested", "rows": []}
    return out


def format_diff(d: dict[str, Any]) -> str:
    """Human-readable text of :meth:`Library.diff` / :func:`diff_designs`."""
    lines = []
    if "a" in d and "b" in d:
        a, b = d["a"], d["b"]
        lines.append(f"--- {a['name']}@{a['revision']}  {a['author']}  {a['created_at']}  {a['message']}")
        lines.append(f"+++ {b['name']}@{b['revision']}  {b['author']}  {b['created_at']}  {b['message']}")
    if d["same_content"]:
        lines.append("identical designs")
        return "\n".join(lines)
    nums = d["numbers"]
    lines.append("\nnumbers:")
    if nums["available"]:
        for r in nums["rows"]:
            rel = f" ({r['relative']:+.1%})" if r["relative"] is not None else ""
            delta = f"{r['delta']:+,}" if isinstance(r["delta"], int) else (f"{r['delta']:+.4g}" if r["delta"] is not None else "")
            lines.append(f"  {r['metric']:<34} {_num(r['a']):>18} -> {_num(r['b']):>18}  {delta}{rel}")
    else:
        lines.append(f"  {nums['note']}")
    lines.append("\nfields:")
    for f in d["fields"] or []:
        lines.append(f"  {f['field']}: {json.dumps(f['a'])} -> {json.dumps(f['b'])}")
    if not d["fields"]:
        lines.append("  (none)")
    plan = d["plan"]
    lines.append("\nplan:")
    if plan.get("error"):
        lines.append(f"  {plan['error']}")
    if "depth" in plan and plan["depth"]["a"] != plan["depth"]["b"]:
        lines.append(f"  executed depth {plan['depth']['a']} -> {plan['depth']['b']}")
    for c in plan["changed"]:
        parts = ", ".join(f"{k} {json.dumps(v['a'])} -> {json.dumps(v['b'])}" for k, v in c["changes"].items())
        lines.append(f"  ~ {c['stack']}[{c['index']}]: {parts}")
    for x in plan["added"]:
        lines.append(f"  + {x['stack']}[{x['index']}]: {x['attention']} / {x['mlp']} / {x['norm']}")
    for x in plan["removed"]:
        lines.append(f"  - {x['stack']}[{x['index']}]: {x['attention']} / {x['mlp']} / {x['norm']}")
    if not (plan["changed"] or plan["added"] or plan["removed"] or plan.get("error")):
        lines.append("  (no layer changes)")
    return "\n".join(lines)


def _num(v: Any) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


# ---------------------------------------------------------------------------
# CLI: python -m backend library save|list|show|diff|delete


def cli_library(args: Any) -> int:
    cmd = args.library_command
    lib = Library()
    try:
        if cmd == "save":
            info = lib.save(args.design, author=args.author, message=args.message, name=args.name)
            print(f"saved {info.name}@{info.revision} ({info.content_hash[:12]}) by {info.author} at {info.created_at.isoformat(timespec='seconds')}")
            return 0
        if cmd == "list":
            rows = lib.list(search=args.search)
            if args.json:
                print(json.dumps([r.to_dict() for r in rows], indent=2))
                return 0
            if not rows:
                print("no designs" + (f" matching {args.search!r}" if args.search else ""))
                return 0
            print(f"{'name':<32} {'revs':>4}  {'latest':<20} {'author':<16} message")
            for r in rows:
                when = r.latest.created_at.strftime("%Y-%m-%d %H:%M UTC")
                msg = r.latest.message.splitlines()[0] if r.latest.message else ""
                print(f"{r.name:<32} {r.n_revisions:>4}  {when:<20} {r.latest.author:<16} {msg}")
            return 0
        if cmd == "show":
            rev = lib.get(args.name, args.revision)
            print(f"# {rev.name}@{rev.revision} by {rev.author} at {rev.created_at.isoformat(timespec='seconds')}: {rev.message}")
            print(f"# sha256 {rev.content_hash}")
            print(rev.design_yaml, end="")
            return 0
        if cmd == "diff":
            d = lib.diff(args.name, args.rev_a, args.rev_b)
            print(json.dumps(d, indent=2, default=str) if args.json else format_diff(d))
            return 0
        if cmd == "delete":
            n = lib.delete(args.name, confirm=bool(args.yes))
            print(f"deleted {args.name} ({n} revision{'s' if n != 1 else ''})")
            return 0
        raise DesignError("library", f"unknown command {cmd!r}")
    finally:
        lib.close()
