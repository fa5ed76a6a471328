"""The workspace store: SQLite (WAL) for model versions, runs, metrics and reviews.

This is the only module that talks to SQLite. Every call opens its own short-lived
connection, so the Streamlit server, CLI processes and background training jobs can all
use the same file at once; WAL mode lets readers proceed while a job writes. Large arrays
never go in here: they live in files next to the database.

Tables (schema version :data:`SCHEMA_VERSION`; older stores are migrated by :data:`MIGRATIONS`,
after a backup copy ``store.sqlite.v<N>.bak``):

* ``model_versions``: one row per model version ("orig" is the loaded model), with its
  file, checksum and provenance (parent, method, rho, targets, seed, epochs, metrics).
* ``runs``: jobs of every kind (``kind``: a repair run, a GCE biased model, a sweep, ...) with
  status queued/running/done/failed/cancelled, progress, ETA, log tail, error text, their
  parameters and result; ``run_metrics``: per-step losses and per-evaluation metrics.
* ``reviews``: human verdicts (spurious associations, mislabelled samples, notes on pivotal
  images), unique per (kind, key, model_version) so a second review updates the first.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from workspace.errors import WorkspaceError

SCHEMA_VERSION = 2
RUN_STATUSES = ("queued", "running", "done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS model_versions (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    sha256 TEXT,
    parent TEXT,
    method TEXT,
    rho REAL,
    targets TEXT,
    seed INTEGER,
    epochs INTEGER,
    run_id INTEGER,
    metrics TEXT,
    note TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    method TEXT NOT NULL,
    targets TEXT,
    rho REAL,
    seed INTEGER,
    config TEXT,
    parent_version TEXT,
    status TEXT NOT NULL,
    progress REAL DEFAULT 0,
    message TEXT DEFAULT '',
    log_tail TEXT DEFAULT '',
    error TEXT,
    pid INTEGER,
    device TEXT,
    model_version TEXT,
    baseline TEXT,
    final TEXT,
    cancel_requested INTEGER DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS run_metrics (
    run_id INTEGER NOT NULL,
    epoch REAL NOT NULL,
    step INTEGER NOT NULL,
    accuracy REAL,
    target_error REAL,
    loss REAL,
    extra TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS run_metrics_run ON run_metrics(run_id);
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    model_version TEXT NOT NULL,
    verdict TEXT NOT NULL,
    note TEXT DEFAULT '',
    payload TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE(kind, key, model_version)
);
"""

#: schema version -> statements that bring a store from the version before it to this one
MIGRATIONS: dict[int, list[str]] = {
    2: [  # one job table for every long task
        "ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'repair'",
        "ALTER TABLE runs ADD COLUMN entry TEXT",
        "ALTER TABLE runs ADD COLUMN params TEXT",
        "ALTER TABLE runs ADD COLUMN result TEXT",
        "ALTER TABLE runs ADD COLUMN eta REAL",
        "ALTER TABLE runs ADD COLUMN parent_run INTEGER",
        "ALTER TABLE runs ADD COLUMN run_key TEXT",
        "CREATE INDEX IF NOT EXISTS runs_kind ON runs(kind)",
    ],
}

_JSON_COLUMNS = {"targets", "metrics", "config", "baseline", "final", "extra", "payload", "params", "result"}


def _decode(row: sqlite3.Row | None) -> dict | None:
    if row is None:
        return None
    out = dict(row)
    for key in _JSON_COLUMNS & out.keys():
        if out[key] is not None:
            out[key] = json.loads(out[key])
    return out


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _encode(value):
    return None if value is None else json.dumps(value)


def _wal(db: sqlite3.Connection, *, wait: float = 30.0) -> None:
    """Switch a store to write-ahead logging. Two processes doing so on a new file at once
    deadlock on the lock upgrade, and SQLite answers one of them "database is locked" at once,
    without its busy handler: that one tries again (the other's switch then makes it a no-op)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Store:
    """The workspace's SQLite database at ``path`` (created with its schema on first use).

    A store in a folder that cannot be written is opened read-only: everything can be viewed,
    and every write raises :class:`~workspace.errors.WorkspaceError` saying why. A damaged
    store or one written by a newer version is reported and never modified.
    """

    def __init__(self, path: str | Path, *, read_only: bool | None = None):
        self.path = Path(path)
        if read_only is None:
            folder_writable = os.access(self.path.parent, os.W_OK) if self.path.parent.exists() else True
            file_writable = not self.path.exists() or os.access(self.path, os.W_OK)
            read_only = not (folder_writable and file_writable)
        self.read_only = bool(read_only)
        if self.read_only:
            if not self.path.is_file():
                raise WorkspaceError(f"the state folder {self.path.parent} is read-only and holds no store yet")
            version = self.schema_version
            self._check_version(version)
            if version < SCHEMA_VERSION:
                raise WorkspaceError(
                    f"{self.path} was written by an older Groupfix (store schema {version}) and needs an upgrade, "
                    "which its read-only state folder does not allow; copy the workspace or set state_dir to a "
                    "writable folder")
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                _wal(db)
                db.execute("BEGIN IMMEDIATE")  # one process creates or migrates at a time
                try:
                    fresh = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                    version = SCHEMA_VERSION if fresh else 1 if row is None else int(row[0])
                    if fresh:  # created at the current version in this transaction: nobody sees an old one
                        for target in range(2, SCHEMA_VERSION + 1):
                            for statement in MIGRATIONS[target]:
                                db.execute(statement)
                    if row is None:
                        db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
                    self._check_version(version)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            if version < SCHEMA_VERSION:
                self._migrate(version)
        except OSError as exc:
            raise WorkspaceError(f"cannot create the store {self.path}: {exc.strerror or exc}") from None

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise WorkspaceError(
                f"{self.path} was written by a newer Groupfix (store schema {version}, this one reads up to "
                f"{SCHEMA_VERSION}); upgrade Groupfix, the store was left as it is")

    def _migrate(self, version: int) -> None:
        """Bring a store from ``version`` to :data:`SCHEMA_VERSION`, after a backup copy.

        The backup is written under a temporary name and renamed, so a crash while copying never
        leaves a half backup that a later migration would take for a whole one; each step runs in
        one transaction, so a crash in the middle leaves the previous version.
        """
        copy_path = self.path.with_name(f"{self.path.name}.v{version}.bak")
        for stale in self.path.parent.glob(f".{self.path.name}.v*.bak.*.tmp*"):  # a killed migration's copy
            pid = stale.name.split(".bak.", 1)[1].split(".", 1)[0]
            if pid.isdigit() and not _process_alive(int(pid)):
                stale.unlink(missing_ok=True)
        if not copy_path.exists():
            tmp = copy_path.with_name(f".{copy_path.name}.{os.getpid()}.tmp")
            try:
                with self._connect() as db:
                    copy = sqlite3.connect(tmp, isolation_level=None)
                    try:
                        db.backup(copy)
                        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                        copied = int(copy.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
                    finally:
                        copy.close()
                if copied == version:  # else another process migrated meanwhile (and kept the backup)
                    os.replace(tmp, copy_path)
            finally:
                for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
                    leftover.unlink(missing_ok=True)
        with self._connect() as db:
            for target in range(version + 1, SCHEMA_VERSION + 1):
                db.execute("BEGIN IMMEDIATE")
                try:
                    current = int(db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
                    if current < target:  # another process may have migrated meanwhile
                        for statement in MIGRATIONS[target]:
                            db.execute(statement)
                        db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(target),))
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise

    @contextmanager
    def _connect(self):
        """A short-lived connection; SQLite's own errors about the file become one-line
        :class:`~workspace.errors.WorkspaceError` (a damaged file, a full disk, a lock held too long)."""
        try:
            if self.read_only:
                # immutable: no lock or WAL files are created, so a read-only folder can be viewed
                db = sqlite3.connect(f"file:{self.path}?immutable=1", uri=True, timeout=30.0, isolation_level=None)
            else:
                db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._translate(exc) from None
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        except sqlite3.Error as exc:
            error = self._translate(exc)
            if error is exc:
                raise
            raise error from None
        finally:
            db.close()

    def _translate(self, exc: sqlite3.Error) -> Exception:
        """The user-facing error for a SQLite error about the file; ``exc`` itself for a bug
        (a wrong statement stays a bug, never hidden as bad input)."""
        text = str(exc)
        lower = text.lower()
        if isinstance(exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)):
            return exc
        if "full" in lower:
            return WorkspaceError(f"cannot write the store {self.path}: the disk is full ({text}); nothing was "
                                  "half written: free some space and run it again")
        if "locked" in lower or "busy" in lower:
            return WorkspaceError(f"the store {self.path} stayed locked by another process for 30 s ({text}); "
                                  "try again when the other job or server is done")
        if "readonly" in lower or "read-only" in lower or "unable to open" in lower or "i/o" in lower:
            return WorkspaceError(f"cannot use the store {self.path} ({text}); check the state folder's "
                                  "permissions and disk")
        if isinstance(exc, sqlite3.OperationalError):
            return exc  # "no such table", a syntax error: a bug, not the user's file
        return WorkspaceError(
            f"the store {self.path} is damaged or not a Groupfix store ({text}); it was left as it is: "
            "move it aside (keeping it) and open the workspace again to start a fresh one")

    def require_writable(self, what: str) -> None:
        """Raise :class:`~workspace.errors.WorkspaceError` if ``what`` (a description) cannot be saved."""
        self._writable(what)

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise WorkspaceError(f"the state folder {self.path.parent} is read-only: cannot save {what} "
                                 "(viewing works; copy the workspace or set state_dir to a writable folder)")

    @property
    def schema_version(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])

    # ---- model versions -------------------------------------------------------------
    def add_model_version(self, id: str, *, path: str, sha256: str | None = None, parent=None,
                          method=None, rho=None, targets=None, seed=None, epochs=None,
                          run_id=None, metrics=None, note=None) -> dict:
        """Register a model version. Ids are never reused: an existing id raises ValueError."""
        self._writable("a model version")
        with self._connect() as db:
            try:
                db.execute(
                    "INSERT INTO model_versions (id, path, sha256, parent, method, rho, targets, seed,"
                    " epochs, run_id, metrics, note, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (id, str(path), sha256, parent, method, rho, _encode(targets), seed, epochs,
                     run_id, _encode(metrics), note, time.time()),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"model version {id!r} already exists") from None
        return self.get_model_version(id)

    def get_model_version(self, id: str) -> dict | None:
        with self._connect() as db:
            return _decode(db.execute("SELECT * FROM model_versions WHERE id=?", (id,)).fetchone())

    def list_model_versions(self) -> list[dict]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM model_versions ORDER BY created_at, id").fetchall()
        return [_decode(r) for r in rows]

    def update_model_version(self, id: str, **fields) -> None:
        self._update("model_versions", "id", id, fields)

    # ---- runs ------------------------------------------------------------------------
    def create_run(self, *, method: str, targets=None, rho=None, seed=None, config=None,
                   parent_version: str = "orig", status: str = "queued", kind: str = "repair",
                   entry: str | None = None, params=None, device: str | None = None,
                   parent_run: int | None = None, run_key: str | None = None) -> int:
        self._writable("a job")
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO runs (method, targets, rho, seed, config, parent_version, status, created_at,"
                " kind, entry, params, device, parent_run, run_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (method, _encode(targets), rho, seed, _encode(config), parent_version, status, time.time(),
                 kind, entry, _encode(params), device, parent_run, run_key),
            )
            return int(cur.lastrowid)

    def update_run(self, run_id: int, **fields) -> None:
        if "status" in fields and fields["status"] not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}")
        self._update("runs", "id", run_id, fields)

    def get_run(self, run_id: int) -> dict | None:
        with self._connect() as db:
            return _decode(db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone())

    def list_runs(self, *, status: str | None = None, kind: str | None = None,
                  parent_run: int | None = None) -> list[dict]:
        clauses, args = [], []
        for column, value in (("status", status), ("kind", kind), ("parent_run", parent_run)):
            if value is not None:
                clauses.append(f"{column}=?")
                args.append(value)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        with self._connect() as db:
            return [_decode(r) for r in db.execute(f"SELECT * FROM runs{where} ORDER BY id", args).fetchall()]

    def add_metric(self, run_id: int, *, epoch: float, step: int, accuracy=None,
                   target_error=None, loss=None, extra=None) -> None:
        self.add_metrics(run_id, [{"epoch": epoch, "step": step, "accuracy": accuracy,
                                   "target_error": target_error, "loss": loss, "extra": extra}])

    def add_metrics(self, run_id: int, rows: list[dict]) -> None:
        """Several metric rows in one transaction (per-step losses are written in batches)."""
        if not rows:
            return
        self._writable("metrics")
        now = time.time()
        with self._connect() as db:
            db.executemany(
                "INSERT INTO run_metrics VALUES (?,?,?,?,?,?,?,?)",
                [(run_id, r["epoch"], r["step"], r.get("accuracy"), r.get("target_error"), r.get("loss"),
                  _encode(r.get("extra")), now) for r in rows],
            )

    def run_metrics(self, run_id: int) -> list[dict]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM run_metrics WHERE run_id=? ORDER BY step, epoch", (run_id,)
            ).fetchall()
        return [_decode(r) for r in rows]

    # ---- reviews ---------------------------------------------------------------------
    def upsert_review(self, kind: str, key: str, *, model_version: str, verdict: str,
                      note: str = "", payload=None) -> dict:
        """Store a review; reviewing the same (kind, key, model_version) again updates it."""
        self._writable("a review")
        now = time.time()
        with self._connect() as db:
            db.execute(
                "INSERT INTO reviews (kind, key, model_version, verdict, note, payload, created_at,"
                " updated_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(kind, key, model_version) DO"
                " UPDATE SET verdict=excluded.verdict, note=excluded.note,"
                " payload=COALESCE(excluded.payload, payload), updated_at=excluded.updated_at",
                (kind, key, model_version, verdict, note, _encode(payload), now, now),
            )
        return self.get_review(kind, key, model_version=model_version)

    def get_review(self, kind: str, key: str, *, model_version: str) -> dict | None:
        with self._connect() as db:
            return _decode(db.execute(
                "SELECT * FROM reviews WHERE kind=? AND key=? AND model_version=?",
                (kind, key, model_version),
            ).fetchone())

    def list_reviews(self, kind: str | None = None, *, model_version: str | None = None) -> list[dict]:
        clauses, args = [], []
        if kind is not None:
            clauses.append("kind=?")
            args.append(kind)
        if model_version is not None:
            clauses.append("model_version=?")
            args.append(model_version)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        with self._connect() as db:
            rows = db.execute(f"SELECT * FROM reviews{where} ORDER BY updated_at", args).fetchall()
        return [_decode(r) for r in rows]

    def delete_review(self, kind: str, key: str, *, model_version: str) -> None:
        self._writable("a review")
        with self._connect() as db:
            db.execute("DELETE FROM reviews WHERE kind=? AND key=? AND model_version=?",
                       (kind, key, model_version))

    # ---- helpers ---------------------------------------------------------------------
    def _update(self, table: str, key_column: str, key, fields: dict) -> None:
        if not fields:
            return
        self._writable(f"the {table} row")
        columns = ", ".join(f"{name}=?" for name in fields)
        values = [_encode(v) if name in _JSON_COLUMNS else v for name, v in fields.items()]
        with self._connect() as db:
            db.execute(f"UPDATE {table} SET {columns} WHERE {key_column}=?", (*values, key))
