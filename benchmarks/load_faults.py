#!/usr/bin/env python
"""Load and faults of the web app on localhost: a public Space's worst day, counted.

1. Load: `--clients` (16) visitors submit a run at once, through gradio_client, against the app at
   concurrency 1 and queue 16 with tiny settings on the shapes world. Each gets a result or a "busy"
   message (queue full); no two share ids collide; every finished run opens by its id (/load_run).
2. kill -9 mid-run: a long run is started, the app is killed while it runs, then restarted.
3. kill -9 mid-save: the app is started with a fault hook that pauses `Report.save` between two
   files of the run folder (and says so in a marker file); it is killed there, then restarted.
After each restart: no half-written run is listed or served (every listed run loads, every run
folder on disk is complete and listed; the temporary folder of an interrupted save is neither),
and every run that finished before the kill still opens.

Prints the counts: requests, results, refusals (busy), other errors, id collisions, lost runs,
half-written runs. Bounded: at most clients + 2 analyses, all on 127.0.0.1.

    OMP_NUM_THREADS=1 python benchmarks/load_faults.py            # about 2 minutes on 2 CPU cores
    python benchmarks/load_faults.py --clients 24                  # more visitors than the queue holds
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # originality from this checkout
EXAMPLE = ROOT / "assets" / "examples" / "shapes_common.png"
TINY = {"max_tokens": 1, "steps": 2, "batch_size": 1, "num_reconstructions": 1, "num_inference_steps": 2}
LONG = {"max_tokens": 1, "steps": 2000, "batch_size": 2, "num_reconstructions": 2, "num_inference_steps": 2}
BUSY_WORDS = ("queue is full", "busy", "too many")
# Run inside the app's process for the mid-save kill: pause Report.save after its first file.
SAVE_HOOK = """
import os, time, runpy
import originality.report as report
_real = report.save_embeddings
def _slow(path, token, embeddings):
    _real(path, token, embeddings)
    open(os.environ["FAULT_MARKER"], "w").write(str(path))
    time.sleep(600)
report.save_embeddings = _slow
runpy.run_path("app.py", run_name="__main__")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """`python app.py` on 127.0.0.1 with its data in `data`; `hook`: run SAVE_HOOK instead."""

    def __init__(self, work: Path, data: Path, concurrency: int, queue: int, hook: bool = False):
        self.port, self.work = free_port(), work
        env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(self.port),
                   ORIGINALITY_DATA_DIR=str(data), ORIGINALITY_CONCURRENCY=str(concurrency),
                   ORIGINALITY_QUEUE_SIZE=str(queue), GRADIO_TEMP_DIR=str(work / "gradio"), HF_HUB_OFFLINE="1",
                   GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
                   FAULT_MARKER=str(work / "saving"), ORIGINALITY_MODEL=str(ROOT / "assets" / "shapes-model"),
                   TMPDIR=str(work))
        env.pop("ORIGINALITY_HF_DATASET", None)
        env.pop("ORIGINALITY_DEFAULTS", None)
        args = ["-c", SAVE_HOOK] if hook else ["app.py"]
        self.log = open(work / f"app-{self.port}.log", "w")
        self.proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}/"
        deadline = time.monotonic() + 240
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"app.py exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url, timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"app.py did not answer in 240 s; see {self.log.name}") from None
                time.sleep(0.5)

    def client(self):
        from gradio_client import Client  # noqa: PLC0415

        return Client(self.url, verbose=False)

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def analyze(client, settings: dict, **kwargs):
    from gradio_client import handle_file  # noqa: PLC0415

    return client.submit(handle_file(str(EXAMPLE)), "shapes", "default", "", "fast", json.dumps(settings),
                         api_name="/analyze", **kwargs)


def opens(app: App, run_ids: list[str]) -> list[str]:
    """The ids among `run_ids` that do NOT open through /load_run."""
    client, lost = app.client(), []
    for run_id in run_ids:
        try:
            if client.predict(run_id, api_name="/load_run")["run_id"] != run_id:
                lost.append(run_id)
        except Exception:  # noqa: BLE001 - a run that does not open is what is counted
            lost.append(run_id)
    return lost


def half_written(app: App, data: Path) -> tuple[int, int]:
    """(half-written runs listed or served, leftover temporary folders: hidden names, which are no run id)."""
    from originality.app.store import RUN_ID_PATTERN, RunStore  # noqa: PLC0415

    store = RunStore(data)
    listed = {row["id"] for row in store.list_recent(10_000)}
    folders = [p for p in store.runs_dir.iterdir() if p.is_dir()]
    complete = {p.name for p in folders if RUN_ID_PATTERN.fullmatch(p.name) and (p / "report.json").is_file()}
    bad = len(listed - complete) + len(opens(app, sorted(listed)))  # listed but incomplete, or not loading
    bad += len({p.name for p in folders if RUN_ID_PATTERN.fullmatch(p.name)} - complete)  # a servable id, no report
    leftovers = [p for p in folders if not RUN_ID_PATTERN.fullmatch(p.name)]
    return bad, len(leftovers)


def load_phase(app: App, clients: int) -> dict:
    results, refusals, errors, lock = [], [], [], threading.Lock()
    start = threading.Barrier(clients)

    def visitor(i: int) -> None:
        client = app.client()
        start.wait()
        try:
            out = analyze(client, {**TINY, "seed": i}).result(timeout=900)
            with lock:
                results.append(out)
        except Exception as err:  # noqa: BLE001 - sorted into busy / other below
            text = str(err)
            with lock:
                (refusals if any(w in text.lower() for w in BUSY_WORDS) else errors).append(text[:200])

    t0 = time.monotonic()
    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [r["run_id"] for r in results]
    return {"requests": clients, "results": len(results), "refusals": len(refusals), "errors": len(errors),
            "id_collisions": len(ids) - len(set(ids)), "not_opening": len(opens(app, ids)),
            "seconds": round(time.monotonic() - t0, 1), "refusal_message": refusals[:1], "error_messages": errors[:3],
            "run_ids": ids}


def kill_phase(work: Path, data: Path, earlier: list[str], hook: bool) -> dict:
    """Start the app (with the save hook), start a long run (mid-run) or a tiny one (mid-save), kill -9, restart."""
    marker = work / "saving"
    marker.unlink(missing_ok=True)
    app = App(work, data, 1, 16, hook=hook)
    job = analyze(app.client(), TINY if hook else LONG)
    deadline = time.monotonic() + 300
    if hook:
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        where = "mid-save" if marker.exists() else "no save reached"
    else:
        while job.status().code.value not in ("PROCESSING", "ITERATING") and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # well into the inversion
        where = "mid-run"
    app.kill9()
    restarted = App(work, data, 1, 16)
    try:
        bad, leftovers = half_written(restarted, data)
        return {"kill": where, "earlier_runs": len(earlier), "lost": len(opens(restarted, earlier)),
                "half_written": bad, "temporary_folders_left": leftovers}
    finally:
        restarted.stop()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16, help="visitors at once (at most 64)")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 64:
        parser.error("--clients must be in 1..64")
    work = Path(tempfile.mkdtemp(prefix="load-faults-"))
    data = work / "data"
    app = App(work, data, 1, 16)
    try:
        load = load_phase(app, args.clients)
    finally:
        app.stop()
    earlier = load.pop("run_ids")
    print(f"load: {json.dumps(load)}", flush=True)
    mid_run = kill_phase(work, data, earlier, hook=False)
    print(f"kill -9 mid-run: {json.dumps(mid_run)}", flush=True)
    mid_save = kill_phase(work, data, earlier, hook=True)
    print(f"kill -9 mid-save: {json.dumps(mid_save)}", flush=True)
    totals = {"requests": load["requests"] + 2, "results": load["results"], "refusals": load["refusals"],
              "errors": load["errors"], "id_collisions": load["id_collisions"],
              "lost_runs": load["not_opening"] + mid_run["lost"] + mid_save["lost"],
              "half_written": mid_run["half_written"] + mid_save["half_written"]}
    print(f"totals: {json.dumps(totals)}  (work folder: {work})")
    return {"load": load, "mid_run": mid_run, "mid_save": mid_save, "totals": totals}


if __name__ == "__main__":
    main()
