"""The token lengths of ONE image in parallel over several processes (N GPUs, or N CPU processes).

    accelerate launch --cpu --num_processes 2 -m originality analyze photo.png --out runs/photo

Process `rank` of `size` runs the lengths m with (m - 1) % size == rank, in ascending order, so
lengths 1..size start at the same time. The processes share nothing but a directory (one node,
no network): a process settles each of its lengths by writing one small file, `m{m}.{state}`
(passed, failed, cancelled or error), after the length's pickled `TokenResult`. Before a length
and after each of its events (every inversion step, every generation batch) a process looks for
a SHORTER length that passed; if there is one, the length cannot be the score, so its iterator is
closed (`analysis.iter_length` unwinds cleanly) and it settles as cancelled. A longer length that
passes never cancels a shorter one: the score is the first length that passes.

The main process (rank 0) runs the engine's one stop rule (`analysis.iter_score`) over a
`TeamRunner`: it asks for lengths 1, 2, ... in order, waits for those of other processes (running its
own next lengths meanwhile) and stops at the first that passed, so the report is built by the engine's
`analysis.decide` as in a sequential run. A length's result depends only on (seed, m, query)
(`analysis.inversion_seed`), never on the length before it, so the label is the sequential run's.
That is also why `token_init` "previous" (length m starts from length m-1's tokens) and `seeds` > 1
(each further seed is its own sequential run) are refused here.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from .analysis import (Decision, Event, LengthDone, LocalRunner, Prepared, check_inputs, iter_length, iter_score,
                       iter_similarity)
from .config import AnalysisConfig
from .models import OriginalityModel
from .provenance import input_sha256
from .report import TokenResult
from .similarity import load_references

PASSED, FAILED, CANCELLED, ERROR = "passed", "failed", "cancelled", "error"
STATES = (PASSED, FAILED, CANCELLED, ERROR)
# How long the main process waits for a process that has stopped reporting (no event, no settled
# length) before it gives up: longer than any one event (a generation batch, DreamSim, CLIP) takes.
STALL_TIMEOUT_S = 900.0
POLL_S = 0.05  # how often the main process looks at the shared directory while it waits

# One length run by this process: m -> its events, ending with `LengthDone` (`analysis.iter_length`).
RunLength = Callable[[int], Iterator[Event]]


class StalledError(TimeoutError):
    """A process stopped reporting while the main process waited for one of its lengths."""


@dataclass(frozen=True)
class Team:
    """This process's place among the `size` processes (>= 1) that share one image's lengths;
    `rank` in 0..size-1, 0 being the main process (it decides and writes the report)."""

    rank: int
    size: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.size:
            raise ValueError(f"process rank must be in 0..{self.size - 1}, got {self.rank}")

    def lengths(self, max_tokens: int) -> list[int]:
        """This process's token lengths in 1..max_tokens, ascending: m with (m - 1) % size == rank."""
        return list(range(self.rank + 1, max_tokens + 1, self.size))

    def owner(self, m: int) -> int:
        """The rank that runs length m (>= 1)."""
        return (m - 1) % self.size

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class Settled:
    """How one length ended: `state` in STATES, in process `rank`; `detail` says why (cancelled, error)."""

    num_tokens: int
    state: str
    rank: int
    detail: str = ""


def check_parallel(config) -> None:
    """Refuse the settings under which lengths cannot run apart (`ValueError`, a message for people)."""
    # the default preset needs two flags to split: name both at once
    second = " and second_opinion false (--second-opinion false)" if config.second_opinion else ""
    if config.token_init == "previous":
        raise ValueError("token_init 'previous' (the default preset's warm start) starts length m from length "
                         "m-1's learned tokens, so the lengths must run one after another: use token_init 'domain' "
                         f"(--token-init domain){second} to split the lengths over processes, or run a single process")
    if config.token_init == "nested":
        raise ValueError("token_init 'nested' learns every length's tokens in one inversion that the later lengths "
                         "reuse, so the lengths must run one after another: use token_init 'domain' "
                         "(--token-init domain) to split the lengths over processes, or run a single process")
    if config.seeds > 1:
        raise ValueError(f"seeds {config.seeds}: the label over several seeds reruns the stop rule per seed, which "
                         "is not split over processes; use seeds 1, or run a single process")
    if config.second_opinion:
        raise ValueError("second_opinion reruns the stop rule under another seed after the first has decided, which "
                         "is not split over processes; set it to false (--second-opinion false), or run a single "
                         "process")


class Board:
    """The shared directory: per length a settled-state file `m{m}.{state}` (JSON `Settled`) written
    after its result `m{m}.pkl`, and per process a heartbeat file `alive.{rank}` whose mtime is its
    last event. Every file appears atomically (written beside, then renamed)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def clear(self) -> None:
        """Remove a previous run's files (a stale `m2.passed` would cancel this run's longer lengths)."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _write(self, name: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.root)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, self.root / name)

    def settle(self, settled: Settled, result: TokenResult | None = None) -> None:
        """Record how a length ended; its result first, so that a state file means the result is there."""
        if result is not None:
            # on the CPU: the main process may have another device, or none
            result = replace(result, embeddings=result.embeddings.detach().cpu())
            self._write(f"m{settled.num_tokens}.pkl", pickle.dumps(result))
        self._write(f"m{settled.num_tokens}.{settled.state}", json.dumps(asdict(settled)).encode())

    def settled(self, m: int) -> Settled | None:
        """How length m ended, None while it has not."""
        for state in STATES:
            path = self.root / f"m{m}.{state}"
            if path.is_file():
                return Settled(**json.loads(path.read_text()))
        return None

    def passed_below(self, m: int) -> int | None:
        """The shortest length below m that passed (None: none yet)."""
        return next((k for k in range(1, m) if (self.root / f"m{k}.{PASSED}").is_file()), None)

    def result(self, m: int) -> TokenResult:
        with open(self.root / f"m{m}.pkl", "rb") as fh:
            return pickle.load(fh)  # noqa: S301 - written by this run's own processes

    def beat(self, rank: int) -> None:
        (self.root / f"alive.{rank}").touch()  # its mtime: now

    def last_beat(self, rank: int) -> float | None:
        """The time.time() of process `rank`'s last event (None: none yet)."""
        try:
            return (self.root / f"alive.{rank}").stat().st_mtime
        except FileNotFoundError:
            return None


class TeamRunner:
    """The `analysis.LengthRunner` of process `team.rank`: it runs this process's lengths (`run_length`:
    m -> that length's events here, e.g. `iter_length(prepared, model, m)`), each settled on the board and
    cancelled as soon as a shorter length has passed. On the main process the engine's stop rule asks for
    the lengths in order: one of another process is waited for (running this process's next own lengths
    meanwhile, their `LengthDone` held back until the stop rule asks for them) and given as that process's
    `LengthDone`."""

    def __init__(self, run_length: RunLength, team: Team, board: Board, stall_timeout: float = STALL_TIMEOUT_S):
        self.length_events, self.team, self.board, self.stall_timeout = run_length, team, board, stall_timeout
        self._ran: set[int] = set()  # this process's lengths started (or settled without starting)
        self._held: dict[int, TokenResult] = {}  # own lengths run ahead, until the stop rule asks for them

    def run_length(self, prepared: Prepared, m: int) -> Iterator[Event]:
        if self.team.owner(m) == self.team.rank:
            if m in self._held:
                yield LengthDone(self._held.pop(m))
            elif m not in self._ran:
                yield from self._own(m)
            return
        waiting_since = time.time()
        while (settled := self.board.settled(m)) is None:
            ahead = next((k for k in self.team.lengths(prepared.config.max_tokens) if k > m and k not in self._ran),
                         None)
            if ahead is not None:  # keep this process busy: its next own length
                for event in self._own(ahead):
                    if isinstance(event, LengthDone):
                        self._held[ahead] = event.result
                    else:
                        yield event
                continue
            _check_stall(self.board, self.team.owner(m), m, waiting_since, self.stall_timeout)
            time.sleep(POLL_S)
        if settled.state == ERROR:
            raise RuntimeError(f"token length {m} failed in process {settled.rank}: {settled.detail}")
        if settled.state == CANCELLED:  # only a shorter pass cancels a length, and the stop rule ends at the first
            raise RuntimeError(f"token length {m} was cancelled ({settled.detail}) though no shorter length passed")
        yield LengthDone(self.board.result(m))

    def work(self, max_tokens: int) -> Iterator[Event]:
        """Every length of this process not yet run (settled as cancelled without starting once a shorter one
        has passed): the whole job of a process other than the main one, and the main one's last."""
        for m in self.team.lengths(max_tokens):
            if m not in self._ran:
                yield from self._own(m)

    def _own(self, m: int) -> Iterator[Event]:
        self._ran.add(m)
        return _settle_length(self.board, self.length_events, m, self.team.rank)


def iter_parallel(prepared: Prepared, run_length: RunLength, team: Team, shared_dir: str | os.PathLike, *,
                  sync: Callable[[], None], stall_timeout: float = STALL_TIMEOUT_S) -> Iterator[Event]:
    """Run this process's lengths of `prepared`'s analysis, yielding their events; on the main process
    the engine's stop rule and score (`analysis.iter_score` over a `TeamRunner`) run over every process's
    lengths, and the last event is the `Decision` (the sequential run's report, see the module docstring).

    `run_length`: m -> that length's events here (e.g. `iter_length(prepared, model, m)`). `shared_dir`:
    the directory every process of `team` sees; the main process empties it first and removes it at the
    end. `sync`: a barrier of the team's processes (`accelerate.PartialState.wait_for_everyone`).
    `stall_timeout`: seconds the main process waits for a process that reports nothing before it raises
    `StalledError`. A length that raises in any process makes the main process raise `RuntimeError`.
    """
    # 1. Refuse settings whose lengths depend on each other
    check_parallel(prepared.config)
    board, max_tokens = Board(shared_dir), prepared.config.max_tokens
    runner = TeamRunner(run_length, team, board, stall_timeout)
    # 2. Start clean: the main process removes a previous run's files, then all start together
    if team.is_main:
        board.clear()
    sync()
    if not team.is_main:
        # 3. This process's lengths, each cancelled as soon as a shorter one has passed
        yield from runner.work(max_tokens)
        return
    # 3.-8. The engine's stop rule and score over every process's lengths
    report = yield from iter_score(runner, prepared)
    # 9. This process's lengths the stop rule did not need settle as cancelled; the others' within one event
    yield from runner.work(max_tokens)
    if _await_all(board, team, max_tokens, stall_timeout):
        board.remove()
    yield Decision(report)


def _settle_length(board: Board, run_length: RunLength, m: int, rank: int) -> Iterator[Event]:
    """Run length m here, yielding its events, and settle it on the board (cancelled when a shorter
    length passes before it ends; error, then re-raised, when it raises)."""
    board.beat(rank)
    shorter = board.passed_below(m)
    if shorter is not None:
        board.settle(Settled(m, CANCELLED, rank, f"length {shorter} passed before it started"))
        return
    result: TokenResult | None = None
    events = run_length(m)
    try:
        for event in events:
            board.beat(rank)
            if isinstance(event, LengthDone):
                result = event.result
            yield event
            shorter = None if result is not None else board.passed_below(m)
            if shorter is not None:
                board.settle(Settled(m, CANCELLED, rank, f"length {shorter} passed while it ran"))
                return
    except BaseException as err:  # an interrupt too: the main process must not wait for it
        board.settle(Settled(m, ERROR, rank, f"{type(err).__name__}: {err}"))
        raise
    finally:
        events.close()  # a cancelled length unwinds here (and frees the model)
    if result is None:
        board.settle(Settled(m, ERROR, rank, "it ended without a result"))
        raise RuntimeError(f"token length {m} ended without a result")
    board.settle(Settled(m, PASSED if result.passed else FAILED, rank), result)


def _check_stall(board: Board, owner: int, m: int, waiting_since: float, stall_timeout: float) -> None:
    """`StalledError` when process `owner` has reported nothing for `stall_timeout` s while length m is open."""
    quiet = time.time() - max(waiting_since, board.last_beat(owner) or 0.0)
    if quiet > stall_timeout:
        raise StalledError(f"process {owner} has reported nothing for {quiet:.0f} s while token length {m} "
                           f"was not settled (did it crash? see its output); shared files in {board.root}")


def _await(board: Board, team: Team, m: int, stall_timeout: float) -> Settled:
    """Wait until length m has settled; `StalledError` when its process reports nothing for `stall_timeout` s."""
    waiting_since = time.time()
    while (settled := board.settled(m)) is None:
        _check_stall(board, team.owner(m), m, waiting_since, stall_timeout)
        time.sleep(POLL_S)
    return settled


def _await_all(board: Board, team: Team, max_tokens: int, stall_timeout: float) -> bool:
    """Wait until every length has settled; False (the files stay, for a look) when a process stalls."""
    try:
        for m in range(1, max_tokens + 1):
            _await(board, team, m, stall_timeout)
    except StalledError:
        return False
    return True


def iter_analyze_parallel(image, config: AnalysisConfig | None, model: OriginalityModel, team: Team,
                          shared_dir: str | os.PathLike, *, sync: Callable[[], None], references=None,
                          stall_timeout: float = STALL_TIMEOUT_S) -> Iterator[Event]:
    """`analysis.iter_analyze` with the token lengths split over `team` (see `iter_parallel` for
    `shared_dir`, `sync` and `stall_timeout`): every process checks and prepares the query the same way
    and yields its own lengths' events; the main process's last event is the `Decision`, after the
    comparison with `references` (as `iter_analyze`'s). Raises `ValueError` on bad input or settings
    that need the lengths in order, before any heavy work.
    """
    # 1. Check the inputs and the settings, before any heavy work; prepare the query (the same in every process)
    local = LocalRunner(model)
    loaded, checked = check_inputs(image, config, world=local.world)
    check_parallel(checked)
    refs = load_references(references, checked, local.world) if references and team.is_main else []
    prepared = local.prepare(loaded, checked, input_sha256(image))
    yield prepared.started()
    # 2.-8. The lengths, split over the processes; the main process decides
    for event in iter_parallel(prepared, lambda m: iter_length(prepared, model, m), team, shared_dir, sync=sync,
                               stall_timeout=stall_timeout):
        if isinstance(event, Decision) and refs:
            # 10. Beside the score: similarity to the references, on the main process only
            yield from iter_similarity(event.report, refs, local.compare, prepared.config.copy_line)
        yield event
