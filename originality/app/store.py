"""Where the web app keeps finished analyses: one report folder per run plus an SQLite index.

    store = RunStore()                      # $ORIGINALITY_DATA_DIR, else ./data
    run_id = store.save(report, preset="fast")
    report = store.load(run_id)             # after a restart too

Layout under the root:
    index.sqlite         id, created, score, label, model, domain, preset (WAL mode)
    runs/<id>/           a `Report` folder (report.json, query.png, m{m}/...)

Run ids are unguessable (`secrets.token_urlsafe(16)`: 22 URL-safe characters), so a
share link `?run=<id>` is the only way to find a run. A run is visible only once both
its folder is complete (`Report.save` writes a hidden temporary sibling and renames
it) and its index row is committed, which happens after the rename: a crash at any
point leaves either nothing or an invisible orphan folder, never half a run.

Optional sync to a Hugging Face dataset (for hosts whose disk is wiped on restart):
with $ORIGINALITY_HF_DATASET (e.g. "me/originality-runs") and $HF_TOKEN set, every
saved run is uploaded to `runs/<id>/` of that dataset repo in a background thread
(failures are logged, never raised), and `load` downloads a run it does not hold
locally from there.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import sqlite3
import tempfile
import threading
import zipfile
from contextlib import closing
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, snapshot_download

from ..report import Report

logger = logging.getLogger(__name__)

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")  # use with fullmatch
BUSY_TIMEOUT_S = 5.0
INDEX_NAME = "index.sqlite"
RUNS_DIR = "runs"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id      TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    score   INTEGER,
    label   TEXT NOT NULL,
    model   TEXT NOT NULL,
    domain  TEXT,
    preset  TEXT
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created);
"""
_COLUMNS = ("id", "created", "score", "label", "model", "domain", "preset")


class InvalidRunId(ValueError):
    """The text is not a run id at all (wrong characters or length)."""


class RunNotFound(KeyError):
    """A well-formed run id that no stored run has."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else "run not found"


def new_run_id() -> str:
    """22 URL-safe characters, 128 random bits."""
    return secrets.token_urlsafe(16)


def check_run_id(run_id: Any) -> str:
    """Return `run_id` if it is well-formed, else raise `InvalidRunId` saying what a run id looks like."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        shown = repr(run_id) if not isinstance(run_id, str) or len(run_id) <= 80 else repr(run_id[:80] + "...")
        raise InvalidRunId(
            f"{shown} is not a run id: a run id is 16 to 64 letters, digits, '-' or '_' "
            "(copy the whole ?run=... link)"
        )
    return run_id


class RunStore:
    """Finished analyses on disk (see the module docstring). Safe to share between threads."""

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        *,
        hf_dataset: str | None = None,
        hf_token: str | None = None,
    ):
        root = root if root is not None else (os.environ.get("ORIGINALITY_DATA_DIR") or "data")
        self.root = Path(root).expanduser().resolve()
        (self.root / RUNS_DIR).mkdir(parents=True, exist_ok=True)
        self.runs_dir = (self.root / RUNS_DIR).resolve()
        self.index_path = self.root / INDEX_NAME
        self.hf_dataset = hf_dataset if hf_dataset is not None else os.environ.get("ORIGINALITY_HF_DATASET") or None
        self.hf_token = hf_token if hf_token is not None else os.environ.get("HF_TOKEN") or None
        self._uploads: list[threading.Thread] = []
        self._uploads_lock = threading.Lock()
        self._repo_ready = False
        with closing(self._connect()) as conn, conn:
            conn.executescript(_SCHEMA)

    def __repr__(self) -> str:
        sync = f", hf_dataset={self.hf_dataset!r}" if self.hf_sync else ""
        return f"RunStore({str(self.root)!r}{sync})"

    @property
    def hf_sync(self) -> bool:
        """True when runs are mirrored to a Hugging Face dataset."""
        return bool(self.hf_dataset and self.hf_token)

    # ------------------------------------------------------------------ index

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.index_path, timeout=BUSY_TIMEOUT_S)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.row_factory = sqlite3.Row
        return conn

    def _row(self, run_id: str) -> dict[str, Any] | None:
        with closing(self._connect()) as conn:
            row = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return dict(row) if row else None

    def _insert(self, run_id: str, report: Report, preset: str | None) -> None:
        values = (
            run_id, report.created or "", report.score, report.label, str(report.model.get("name", "")),
            report.config.get("domain"), preset,
        )
        with closing(self._connect()) as conn, conn:
            conn.execute(f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)", values)

    # ------------------------------------------------------------------ paths

    def _run_dir(self, run_id: str) -> Path:
        """The folder of a run; never a path outside `runs/` whatever the id."""
        check_run_id(run_id)
        folder = (self.runs_dir / run_id).resolve()
        if not folder.is_relative_to(self.runs_dir) or folder.parent != self.runs_dir:
            raise InvalidRunId(f"{run_id!r} is not a run id")
        return folder

    # ------------------------------------------------------------------ public API

    def save(self, report: Report, *, preset: str | None = None, run_id: str | None = None) -> str:
        """Store a finished report; returns its new run id (or `run_id`, which must be unused)."""
        run_id = check_run_id(run_id) if run_id is not None else new_run_id()
        folder = self._run_dir(run_id)
        if folder.exists() or self._row(run_id) is not None:
            raise ValueError(f"run id {run_id!r} is already taken")
        report.save(folder)  # complete folder, renamed into place atomically
        try:
            self._insert(run_id, report, preset)  # only now is the run visible
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        logger.info("stored run %s (%s) in %s", run_id, report.label, folder)
        if self.hf_sync:
            self._start_upload(run_id, folder)
        return run_id

    def exists(self, run_id: str) -> bool:
        """True when the run is stored locally (index row and folder); False for malformed ids."""
        try:
            folder = self._run_dir(run_id)
        except InvalidRunId:
            return False
        return self._row(run_id) is not None and (folder / "report.json").is_file()

    def info(self, run_id: str) -> dict[str, Any] | None:
        """The index row of a local run (id, created, score, label, model, domain, preset), or None."""
        try:
            check_run_id(run_id)
        except InvalidRunId:
            return None
        return self._row(run_id)

    def load(self, run_id: str) -> Report:
        """The stored report of `run_id`.

        Raises `InvalidRunId` (a ValueError) for text that is not a run id, and
        `RunNotFound` (a KeyError) for a well-formed id that no run has.
        """
        folder = self._run_dir(run_id)
        if self._row(run_id) is not None and (folder / "report.json").is_file():
            return self._read(run_id, folder)
        if self.hf_sync and self._download(run_id, folder):
            return self._read(run_id, folder)
        raise RunNotFound(
            f"no stored run has the id {run_id!r}; the link may be mistyped, or the run was deleted"
        )

    def list_recent(self, n: int = 20) -> list[dict[str, Any]]:
        """Index rows of the `n` newest runs, newest first."""
        with closing(self._connect()) as conn:
            rows = conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM runs ORDER BY created DESC, rowid DESC LIMIT ?", (int(n),)
            ).fetchall()
        return [dict(r) for r in rows]

    def rebuild_index(self) -> int:
        """Index every complete run folder that has no index row (e.g. after losing index.sqlite)."""
        added = 0
        for folder in sorted(self.runs_dir.iterdir()):
            if not RUN_ID_PATTERN.fullmatch(folder.name) or not (folder / "report.json").is_file():
                continue
            if self._row(folder.name) is None:
                try:
                    self._insert(folder.name, Report.load(folder), None)
                    added += 1
                except Exception as err:  # noqa: BLE001
                    logger.warning("skipping unreadable run folder %s: %s", folder, err)
        return added

    def export(self, run_id: str, dest: str | os.PathLike, *, keep: int = 32) -> list[Path]:
        """Downloads of a run in `dest/<run_id>/`: report.json, the printable report.html, the learned
        embeddings per m (learned_embeds_m{m}.safetensors) and a zip of the whole run folder.

        The folders under `dest` are copies rebuilt on demand, so only the `keep` newest are kept.
        """
        folder = self._run_dir(run_id)
        if not self.exists(run_id) and not (self.hf_sync and self._download(run_id, folder)):
            raise RunNotFound(f"no stored run has the id {run_id!r}")
        dest = Path(dest)
        out = dest / run_id
        zip_name = f"originality-run-{run_id}.zip"
        if not out.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{run_id}.", dir=dest))
            shutil.copy2(folder / "report.json", tmp / "report.json")
            from ..html_report import write as write_html  # noqa: PLC0415  (only when downloads are made)

            write_html(self.load(run_id), tmp / "report.html")
            for sub in sorted(folder.glob("m*/learned_embeds.safetensors")):
                shutil.copy2(sub, tmp / f"learned_embeds_{sub.parent.name}.safetensors")
            with zipfile.ZipFile(tmp / zip_name, "w", zipfile.ZIP_DEFLATED) as zf:
                for path in sorted(folder.rglob("*")):
                    if path.is_file():
                        zf.write(path, f"originality-run-{run_id}/{path.relative_to(folder)}")
            try:
                os.replace(tmp, out)
            except OSError:  # another request made it meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
            _prune(dest, keep=keep, current=out)
        return [out / "report.json", out / "report.html", *sorted(out.glob("learned_embeds_*.safetensors")),
                out / zip_name]

    def wait_for_uploads(self, timeout: float | None = None) -> bool:
        """Wait for background uploads to finish; True when none is still running."""
        with self._uploads_lock:
            threads = list(self._uploads)
        for t in threads:
            t.join(timeout)
        with self._uploads_lock:
            self._uploads = [t for t in self._uploads if t.is_alive()]
            return not self._uploads

    # ------------------------------------------------------------------ internals

    def _read(self, run_id: str, folder: Path) -> Report:
        try:
            return Report.load(folder)
        except Exception as err:  # noqa: BLE001 - a damaged folder is reported, not a crash
            raise RunNotFound(f"the stored run {run_id!r} could not be read ({err})") from err

    def _start_upload(self, run_id: str, folder: Path) -> None:
        thread = threading.Thread(target=self._upload, args=(run_id, folder), name=f"hf-upload-{run_id[:6]}")
        with self._uploads_lock:
            self._uploads = [t for t in self._uploads if t.is_alive()] + [thread]
        thread.start()

    def _upload(self, run_id: str, folder: Path) -> None:
        try:
            api = HfApi(token=self.hf_token)
            if not self._repo_ready:
                api.create_repo(self.hf_dataset, repo_type="dataset", private=True, exist_ok=True)
                self._repo_ready = True
            api.upload_folder(
                repo_id=self.hf_dataset, repo_type="dataset", folder_path=str(folder),
                path_in_repo=f"{RUNS_DIR}/{run_id}", commit_message=f"Add run {run_id}",
            )
            logger.info("uploaded run %s to the dataset %s", run_id, self.hf_dataset)
        except Exception as err:  # noqa: BLE001 - sync is best effort; the run is stored locally
            logger.warning("could not upload run %s to the dataset %s: %s", run_id, self.hf_dataset, err)

    def _download(self, run_id: str, folder: Path) -> bool:
        """Fetch runs/<id>/ from the dataset into `folder` and index it; False when it is not there."""
        tmp = Path(tempfile.mkdtemp(prefix=f".dl-{run_id}.", dir=self.root))
        try:
            snapshot_download(
                repo_id=self.hf_dataset, repo_type="dataset", token=self.hf_token, local_dir=str(tmp),
                allow_patterns=[f"{RUNS_DIR}/{run_id}/*"],
            )
            fetched = (tmp / RUNS_DIR / run_id).resolve()
            if not fetched.is_relative_to(tmp.resolve()) or not (fetched / "report.json").is_file():
                return False
            report = Report.load(fetched)  # refuse to index something unreadable
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(fetched, folder)
            self._insert(run_id, report, None)
            logger.info("downloaded run %s from the dataset %s", run_id, self.hf_dataset)
            return True
        except Exception as err:  # noqa: BLE001 - a missing remote run is just "not found"
            logger.warning("could not fetch run %s from the dataset %s: %s", run_id, self.hf_dataset, err)
            return False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _prune(dest: Path, keep: int, current: Path | None = None) -> None:
    """Delete all but the `keep` most recently built export folders in `dest` (never `current`)."""
    folders = [p for p in dest.iterdir() if p.is_dir() and not p.name.startswith(".")]
    folders.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for old in folders[keep:]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)


_DEFAULT: RunStore | None = None
_DEFAULT_LOCK = threading.Lock()


def default_store() -> RunStore:
    """The process's store (made from the environment on first use), e.g. the web app's."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = RunStore()
        return _DEFAULT


def set_default_store(store: RunStore | None) -> None:
    """Use `store` from now on (None: a new RunStore from the environment on next use)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        _DEFAULT = store
