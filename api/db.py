"""Service metadata in one SQL database (SQLite by default, PostgreSQL at scale):
API keys (hashed), the audit log of writes, uploaded datasets and fit jobs."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    create_engine,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

log = logging.getLogger("api.db")

ROLES = ("viewer", "outreach", "analyst", "admin")
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
KEY_PREFIX = "gm_"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, dt.datetime: DateTime(timezone=True)}


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created: Mapped[dt.datetime] = mapped_column(default=now)
    revoked: Mapped[dt.datetime | None] = mapped_column(default=None)


class AuditEvent(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=now, index=True)
    key_id: Mapped[int | None] = mapped_column(Integer, default=None)
    key_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20), default="")
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(300), default="")
    outcome: Mapped[str] = mapped_column(String(20))
    status: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, default="")


class DatasetRow(Base):
    __tablename__ = "datasets"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[dt.datetime] = mapped_column(default=now)
    created_by: Mapped[str] = mapped_column(String(200), default="")


class FitJob(Base):
    __tablename__ = "fit_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), index=True, default="queued")
    model: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    dataset_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    promote: Mapped[bool] = mapped_column(default=False)
    created: Mapped[dt.datetime] = mapped_column(default=now)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    started: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished: Mapped[dt.datetime | None] = mapped_column(default=None)
    phase: Mapped[str] = mapped_column(String(100), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    owner: Mapped[str] = mapped_column(String(200), default="")
    worker_pid: Mapped[int | None] = mapped_column(Integer, default=None)
    version: Mapped[str | None] = mapped_column(String(100), default=None)
    promoted: Mapped[bool] = mapped_column(default=False)
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    diagnostics: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)


def hash_key(key: str) -> str:
    """SHA-256 of a key: keys are 256-bit random tokens, so a fast hash is safe."""
    return hashlib.sha256(key.encode()).hexdigest()


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite files get their directory, WAL and a busy timeout so
    the web process and fit workers can write side by side."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False,
                                                  "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def add_missing_columns(engine: Engine) -> list[str]:
    """Bring a database made by an earlier version up to date where that is additive:
    columns this version has and the database lacks are added (nullable or with their
    default). Anything else (a dropped or retyped column) is refused with a clear error
    rather than a failure at the first query."""
    found = inspect(engine)
    added = []
    for table in Base.metadata.sorted_tables:
        if not found.has_table(table.name):
            continue
        have = {c["name"] for c in found.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            default = column.default.arg if column.default is not None and \
                column.default.is_scalar else None
            if not column.nullable and default is None:
                raise RuntimeError(f"database {engine.url!r}: table {table.name} lacks the "
                                   f"required column {column.name}; recreate the database "
                                   "or migrate it")
            kind = column.type.compile(dialect=engine.dialect)
            clause = f" DEFAULT {default!r}" if default is not None else ""
            with engine.begin() as connection:
                connection.execute(text(f'ALTER TABLE {table.name} ADD COLUMN '
                                        f'{column.name} {kind}{clause}'))
            added.append(f"{table.name}.{column.name}")
    if added:
        log.warning("database upgraded: added columns %s", ", ".join(added))
    return added


class Database:
    """Sessions on one engine, and the operations the service needs."""

    def __init__(self, url: str, *, create: bool = True):
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        if create:
            Base.metadata.create_all(self.engine)
            add_missing_columns(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()

    # -- keys -----------------------------------------------------------------------------

    def create_key(self, role: str, name: str = "") -> tuple[ApiKey, str]:
        """A new key for `role`; returns the row and the key itself (shown once)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not '{role}'")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKey(name=name or role, role=role, key_hash=hash_key(key),
                     prefix=key[:10])
        with self.session() as session:
            session.add(row)
        return row, key

    def api_keys(self, *, include_revoked: bool = True) -> list[ApiKey]:
        with self.session() as session:
            query = select(ApiKey).order_by(ApiKey.id)
            if not include_revoked:
                query = query.where(ApiKey.revoked.is_(None))
            return list(session.scalars(query))

    def revoke_key(self, key_id: int) -> ApiKey | None:
        with self.session() as session:
            row = session.get(ApiKey, key_id)
            if row is not None and row.revoked is None:
                row.revoked = now()
            return row

    def find_key(self, key: str) -> ApiKey | None:
        """The live key matching `key`, or None."""
        with self.session() as session:
            return session.scalars(select(ApiKey).where(
                ApiKey.key_hash == hash_key(key), ApiKey.revoked.is_(None))).first()

    # -- audit ----------------------------------------------------------------------------

    def audit(self, *, key: ApiKey | None, action: str, target: str, outcome: str,
              status: int, detail: str = "") -> None:
        with self.session() as session:
            session.add(AuditEvent(key_id=key.id if key else None,
                                   key_name=key.name if key else "",
                                   role=key.role if key else "", action=action,
                                   target=target[:300], outcome=outcome, status=status,
                                   detail=detail[:4000]))

    def audit_log(self, limit: int = 100) -> list[AuditEvent]:
        with self.session() as session:
            return list(session.scalars(select(AuditEvent).order_by(
                AuditEvent.id.desc()).limit(limit)))

    # -- datasets -------------------------------------------------------------------------

    def add_dataset(self, row: DatasetRow) -> DatasetRow:
        with self.session() as session:
            existing = session.get(DatasetRow, row.hash)
            if existing is not None:
                return existing
            session.add(row)
            return row

    def dataset(self, digest: str) -> DatasetRow | None:
        with self.session() as session:
            return session.get(DatasetRow, digest)

    # -- fit jobs -------------------------------------------------------------------------

    def create_job(self, **fields: Any) -> FitJob:
        row = FitJob(id=str(uuid.uuid4()), **fields)
        with self.session() as session:
            session.add(row)
        return row

    def job(self, job_id: str) -> FitJob | None:
        with self.session() as session:
            return session.get(FitJob, job_id)

    def update_job(self, job_id: str, *, unless: tuple[str, ...] = (),
                   unless_phase: tuple[str, ...] = (), **fields: Any) -> FitJob | None:
        """Set fields of a job unless its status is one of `unless` or its phase one of
        `unless_phase`; returns the row. One conditional UPDATE, so the check and the write
        are atomic on SQLite too (where SELECT ... FOR UPDATE locks nothing): a worker's
        progress can never overwrite a cancellation that landed in between."""
        with self.session() as session:
            if fields:
                conditions = [FitJob.id == job_id]
                if unless:
                    conditions.append(FitJob.status.not_in(unless))
                if unless_phase:
                    conditions.append(FitJob.phase.not_in(unless_phase))
                session.execute(update(FitJob).where(*conditions).values(**fields)
                                .execution_options(synchronize_session=False))
            return session.get(FitJob, job_id)

    def jobs(self, status: tuple[str, ...] = JOB_STATES, limit: int = 100) -> list[FitJob]:
        with self.session() as session:
            return list(session.scalars(select(FitJob).where(FitJob.status.in_(status))
                                        .order_by(FitJob.created.desc()).limit(limit)))
