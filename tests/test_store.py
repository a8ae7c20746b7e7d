"""RunStore: round trip, restart, id validation, traversal, atomicity, optional HF dataset sync."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from originality import report as report_module
from originality.app import store as store_module
from originality.report import Report, TokenResult
from originality.app.store import InvalidRunId, RunNotFound, RunStore, check_run_id, new_run_id


def make_report(score: int | None = 2, max_tokens: int = 3, created: str = "2024-01-01T00:00:00+00:00") -> Report:
    results = []
    for m in range(1, (score or max_tokens) + 1):
        results.append(TokenResult(
            num_tokens=m, token=f"<s{m}>", embeddings=torch.randn(m, 8), losses=[0.5, 0.25],
            reconstructions=[Image.new("RGB", (64, 64), (10 * m, 0, 0)) for _ in range(2)],
            distances=[0.1 * m, 0.2 * m], edits=[Image.new("RGB", (64, 64), (0, 0, 9))],
            check_scores=[0.9], distance_passed=m == score, check_passed=True, check_detail="1/1 edits",
            timings={"inversion": 1.0},
        ))
    return Report(
        query=Image.new("RGB", (64, 64), (1, 2, 3)), results=results, score=score, max_tokens=max_tokens,
        threshold=0.2, config={"domain": "shapes", "max_tokens": max_tokens}, model={"name": "tiny", "world": "shapes"},
        created=created, total_seconds=1.5,
    )


def test_round_trip(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.save(make_report(), preset="fast")
    assert check_run_id(run_id) == run_id and len(run_id) >= 16
    back = store.load(run_id)
    assert back.label == "2" and back.verdict == make_report().verdict
    assert [r.distances for r in back.results] == [r.distances for r in make_report().results]
    assert len(back.results[1].reconstructions) == 2 and len(back.results[0].edits) == 1
    assert (tmp_path / "runs" / run_id / "m2" / "learned_embeds.safetensors").is_file()
    row = store.info(run_id)
    assert row == {"id": run_id, "created": "2024-01-01T00:00:00+00:00", "score": 2, "label": "2",
                   "model": "tiny", "domain": "shapes", "preset": "fast"}
    assert store.exists(run_id)


def test_ids_are_unguessable_and_distinct():
    ids = {new_run_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(store_module.RUN_ID_PATTERN.fullmatch(i) for i in ids)


def test_index_uses_wal(tmp_path):
    RunStore(tmp_path)
    with sqlite3.connect(tmp_path / "index.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_survives_restart(tmp_path):
    first = RunStore(tmp_path)
    ids = [first.save(make_report(score=s, created=f"2024-01-0{i + 1}T00:00:00+00:00"))
           for i, s in enumerate([1, None, 2])]
    del first
    again = RunStore(tmp_path)  # a new process on the same data dir
    assert [again.load(i).label for i in ids] == ["1", "3+", "2"]
    assert [r["id"] for r in again.list_recent(10)] == ids[::-1]  # newest first
    assert [r["id"] for r in again.list_recent(2)] == ids[::-1][:2]


def test_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ORIGINALITY_DATA_DIR", str(tmp_path / "elsewhere"))
    store = RunStore()
    assert store.root == (tmp_path / "elsewhere").resolve()
    assert (tmp_path / "elsewhere" / "index.sqlite").is_file()


@pytest.mark.parametrize("bad", [
    "../../etc", "..", ".", "", "short", "a" * 65, "abc/defghijklmnopqr", "abcdefghijklmnop/..", "/etc/passwd",
    "abcdefghijklmnop\n", "abcdefghijklmnop.json", "%2e%2e%2fabcdefghijklmnop", "ab cdefghijklmnopq", None, 12345,
    "ÄbcdefghijklmnopÄ",
])
def test_malformed_ids_are_refused(tmp_path, bad):
    store = RunStore(tmp_path)
    with pytest.raises(InvalidRunId, match="not a run id"):
        store.load(bad)
    assert isinstance(InvalidRunId("x"), ValueError)
    assert not store.exists(bad) and store.info(bad) is None


def test_unknown_id_is_a_clear_key_error(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(RunNotFound) as info:
        store.load("A" * 22)
    assert isinstance(info.value, KeyError)
    assert str(info.value).startswith("no stored run has the id 'AAAAAAAAAAAAAAAAAAAAAA'")


def test_traversal_never_leaves_the_root(tmp_path):
    root = tmp_path / "data"
    store = RunStore(root)
    # A complete report folder next to the store must not be reachable by any id.
    make_report().save(tmp_path / "outside")
    for attempt in ["../outside", "..%2Foutside", "runs/../../outside", str(tmp_path / "outside")]:
        with pytest.raises((InvalidRunId, RunNotFound)):
            store.load(attempt)
    # A symlink inside runs/ that points outside is not followed either.
    link_id = "L" * 22
    (store.runs_dir / link_id).symlink_to(tmp_path / "outside")
    with pytest.raises(InvalidRunId):
        store.load(link_id)


def test_crash_while_writing_leaves_no_half_run(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    kept = store.save(make_report())
    calls = {"n": 0}
    real = report_module.save_embeddings

    def crash_on_second(*args, **kwargs):  # the folder is half written when the "crash" happens
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(report_module, "save_embeddings", crash_on_second)
    with pytest.raises(OSError, match="disk full"):
        store.save(make_report())
    assert [r["id"] for r in store.list_recent()] == [kept]
    assert [p.name for p in store.runs_dir.iterdir()] == [kept]  # no temporary folder left either


def test_crash_before_indexing_hides_the_run(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    fixed_id = "B" * 22
    monkeypatch.setattr(store_module, "new_run_id", lambda: fixed_id)

    def crash(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(RunStore, "_insert", crash)
    with pytest.raises(sqlite3.OperationalError):
        store.save(make_report())
    monkeypatch.undo()
    assert store.list_recent() == []
    with pytest.raises(RunNotFound):
        store.load(fixed_id)


def test_orphan_folder_without_index_row_is_invisible(tmp_path):
    """A hard crash between the folder rename and the index insert (nothing to clean up in-process)."""
    store = RunStore(tmp_path)
    orphan = "C" * 22
    make_report().save(store.runs_dir / orphan)
    assert store.list_recent() == [] and not store.exists(orphan)
    with pytest.raises(RunNotFound):
        store.load(orphan)
    # ... until the operator rebuilds the index from the complete folders.
    assert store.rebuild_index() == 1
    assert store.load(orphan).label == "2"


def test_taken_id_is_refused(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.save(make_report())
    with pytest.raises(ValueError, match="already taken"):
        store.save(make_report(), run_id=run_id)


def test_concurrent_saves(tmp_path):
    store = RunStore(tmp_path)
    ids, errors = [], []

    def work():
        try:
            ids.append(RunStore(tmp_path).save(make_report()))
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(r["id"] for r in store.list_recent(10)) == sorted(ids)


# --------------------------------------------------------------------------- Hugging Face dataset sync


class FakeHub:
    """In-memory stand-in for a dataset repo: HfApi.upload_folder writes into it, snapshot_download reads it."""

    def __init__(self, root: Path, fail_upload: bool = False):
        self.root, self.fail_upload = root, fail_upload
        self.uploads: list[dict] = []
        self.created: list[tuple] = []
        self.downloads: list[dict] = []
        hub = self

        class FakeApi:
            def __init__(self, token=None):
                hub.token = token

            def create_repo(self, repo_id, repo_type=None, private=None, exist_ok=False):
                hub.created.append((repo_id, repo_type, private, exist_ok))

            def upload_folder(self, *, repo_id, repo_type, folder_path, path_in_repo, commit_message=None):
                if hub.fail_upload:
                    raise ConnectionError("hub unreachable")
                hub.uploads.append(dict(repo_id=repo_id, repo_type=repo_type, path_in_repo=path_in_repo))
                shutil.copytree(folder_path, hub.root / repo_id / path_in_repo)

        def fake_snapshot_download(*, repo_id, repo_type, token, local_dir, allow_patterns):
            hub.downloads.append(dict(repo_id=repo_id, repo_type=repo_type, allow_patterns=allow_patterns))
            run = allow_patterns[0].split("/")[1]
            src = hub.root / repo_id / "runs" / run
            if src.is_dir():
                shutil.copytree(src, Path(local_dir) / "runs" / run)
            return local_dir

        self.api_class, self.snapshot_download = FakeApi, fake_snapshot_download


@pytest.fixture
def hub(tmp_path, monkeypatch):
    fake = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(store_module, "HfApi", fake.api_class)
    monkeypatch.setattr(store_module, "snapshot_download", fake.snapshot_download)
    monkeypatch.setenv("ORIGINALITY_HF_DATASET", "me/runs")
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    return fake


def test_sync_off_without_token(tmp_path, monkeypatch):
    monkeypatch.setenv("ORIGINALITY_HF_DATASET", "me/runs")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert not RunStore(tmp_path).hf_sync


def test_hf_sync_uploads_then_restores_on_a_fresh_disk(tmp_path, hub):
    store = RunStore(tmp_path / "a")
    assert store.hf_sync
    run_id = store.save(make_report(), preset="paper")
    assert store.wait_for_uploads(timeout=30)
    assert hub.uploads == [{"repo_id": "me/runs", "repo_type": "dataset", "path_in_repo": f"runs/{run_id}"}]
    assert hub.created == [("me/runs", "dataset", True, True)] and hub.token == "hf_test"

    fresh = RunStore(tmp_path / "b")  # e.g. a Space restarted with an empty disk
    report = fresh.load(run_id)
    assert report.label == "2"
    assert hub.downloads[-1]["allow_patterns"] == [f"runs/{run_id}/*"]
    assert hub.downloads[-1]["repo_type"] == "dataset"
    assert fresh.exists(run_id) and fresh.list_recent()[0]["id"] == run_id  # now cached locally
    assert not [p for p in fresh.root.iterdir() if p.name.startswith(".dl-")]  # temp download dir removed


def test_hf_sync_unknown_remote_id_is_not_found(tmp_path, hub):
    with pytest.raises(RunNotFound):
        RunStore(tmp_path).load("Z" * 22)
    assert len(hub.downloads) == 1


def test_hf_upload_failure_is_logged_not_raised(tmp_path, hub, caplog):
    hub.fail_upload = True
    store = RunStore(tmp_path)
    with caplog.at_level("WARNING", logger="originality.app.store"):
        run_id = store.save(make_report())
        assert store.wait_for_uploads(timeout=30)
    assert store.load(run_id).label == "2"  # the local copy is fine
    assert "hub unreachable" in caplog.text


def test_hf_download_of_a_corrupt_run_is_not_indexed(tmp_path, hub):
    bad = hub.root / "me/runs" / "runs" / ("D" * 22)
    bad.mkdir(parents=True)
    (bad / "report.json").write_text(json.dumps({"results": "nonsense"}))
    store = RunStore(tmp_path)
    with pytest.raises(RunNotFound):
        store.load("D" * 22)
    assert store.list_recent() == [] and not (store.runs_dir / ("D" * 22)).exists()
