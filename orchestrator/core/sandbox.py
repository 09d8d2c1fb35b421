"""Where user code runs: a small pool of sandbox processes for JavaScript and jq.

Workflow definitions carry code (JavaScript for INLINE, LAMBDA, SWITCH, DECISION, DO_WHILE and
HTTP_POLL's condition; jq for JSON_JQ_TRANSFORM), and anyone who may register a definition, or
start one whose script is a `${...}` template, chooses it. Run inside the node, a jq program
held the GIL for as long as it liked (libjq cannot be interrupted: `[.a[] as $x | .a[] as $y |
.a[] as $z | .a[] as $w | 1]` over 100 items runs for minutes) and V8 could abort the whole
process; a frozen node lost its lease, and the next node decided the same workflow and froze too.
So no user code runs in the node's process: `run(kind, request, limit_ms)` hands it to one of
a few long-lived sandbox processes (DEFAULT_PROCESSES, `configure(processes=...)`; `python -c
...`, all started on first use, ended at exit) and waits for the answer with a wall-clock
deadline:

- the answer comes within `limit_ms` + GRACE_MS: its result (or the engine's own one-line
  error, raised as Refused);
- it does not: the process is killed (SIGKILL) and Overrun is raised; that evaluation fails, and
  a replacement process is started at once (0.15-0.3 s of CPU, imports and V8's start, in the
  background of the node: the pool's other process serves meanwhile);
- the process ends (a V8 or libjq abort, the memory limit, the kernel's OOM killer): Crashed,
  with the signal and the process's last words on stderr; that evaluation fails, the pool
  starts a replacement.

Inside, a sandbox process runs one request at a time with
- RLIMIT_DATA = the engines' own footprint once started + MEMORY_BYTES (V8 alone reserves
  about 570 MB of private address space at start, most of it never touched). RLIMIT_AS cannot
  be used: V8 reserves over a terabyte of address space and refuses to start under any
  sensible RLIMIT_AS. A program that needs more dies (jq: "cannot allocate memory"; V8: a
  fatal out-of-memory) and only its evaluation fails;
- RLIMIT_CPU = the CPU time it used so far + the request's limit + a little, renewed before each
  request (the backstop when the node itself is gone: SIGXCPU ends the process);
- no core dumps, an environment of its own (nothing of the node's: no secrets for jq's `$ENV`),
  `/` as working directory, stdin and stdout its protocol only (fd 0 and 1 point at /dev/null and
  stderr, so nothing a library prints can corrupt an answer);
- an answer bounded by the engines (javascript.MAX_RESULT_CHARS, jqtransform.MAX_OUTPUT_CHARS)
  and checked again by the node (MAX_REPLY_BYTES).
It ends when the node closes its pipe (the node exited, whatever way), after REUSE_LIMIT
requests, and after any request that left its engine unclean (a JavaScript context stopped by
its time or memory limit): the next request gets a fresh process, so nothing of one
evaluation can reach the next through a damaged engine.

Why the caller blocks (up to the deadline) instead of the decider running in a thread of its
own: the decider is pure and synchronous and is called from the node's event loop, for a
batch of workflows at a time, with store round trips between; making it asynchronous or
moving it to threads changes the concurrency of all of deciding for one case. Waiting on a
pipe releases the GIL, so the node's other threads go on; the event loop itself waits at most
limit + GRACE_MS for one evaluation (JavaScript: 100 + 300 ms, jq: 1,000 + 300 ms), and far
less in practice: a JavaScript timeout is V8's own (the process answers at the limit and is
replaced), only what V8 or libjq cannot interrupt costs a kill. V8's limit is wall-clock time:
on a busy machine a trivial script can be stopped having run for a few milliseconds of it (seen
once in 10,000 evaluations during `make test`). An engine that finds its stopped evaluation had
less than half its limit in CPU time answers Starved, and `run` tries it once more in another
process (the loop then waits for two evaluations); a second stop fails it. The bound is per
evaluation, not per decision: a definition with many script tasks that each run to the limit (a
wide fork, optional tasks one after the other) holds the loop for the sum of them. Measured on a node
(tests/unit/core/test_sandbox.py): while a jq program that would run for hours was evaluated, the
slowest read the node answered took 1.3 s (before: no answer within 10 s, the node frozen).

What this does not protect: the sandbox processes run as the node's user, on its machine,
with the engines (V8, libjq) as the trusted base; a way out of V8 or libjq would reach what
that user can reach (the pipes give it nothing of the node's, but the file system is the
node's). It bounds time, CPU and memory, not what a process could read on disk.

The protocol: frames of a 4-byte big-endian length and UTF-8 JSON. A request is an object with
"kind" and "limit_ms" and the kind's own fields; an answer is {"result": <JSON>} or
{"error": "<one line>"}, with "retire": true when the process ends after it. The handlers are
registered by the engine modules (ENGINES) with `handle(kind, handler)`.

Cost (`python -m bench --scenario sandbox`, 2-core development machine): 0.41 ms per small
JavaScript evaluation (0.25-0.34 ms in-process), 0.10 ms per small jq transform (0.02 ms
in-process); the modules' docstrings have more.
"""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import math
import os
import re
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

__all__ = ["Crashed", "DEFAULT_PROCESSES", "GRACE_MS", "MEMORY_BYTES", "Overrun", "Refused", "SandboxError",
           "Starved", "Unavailable", "configure", "handle", "inside", "processes", "retire", "run", "shutdown"]

log = logging.getLogger(__name__)

DEFAULT_PROCESSES = 2
"""Sandbox processes per node process (`configure(processes=...)`): evaluations at once."""
MEMORY_BYTES = 512 * 1024 * 1024
"""What a sandbox process may allocate beyond its engines' own footprint (RLIMIT_DATA)."""
GRACE_MS = 300
"""Time beyond an evaluation's limit for carrying its request and answer; then it is killed."""
STARTUP_TIMEOUT_S = 10.0
"""A new sandbox process that is not ready in this time (imports, V8's start) is given up."""
QUEUE_TIMEOUT_S = 30.0
"""How long a caller waits for a free sandbox process before its evaluation fails."""
REUSE_LIMIT = 20_000
"""Requests one sandbox process serves before it is replaced."""
MAX_REPLY_BYTES = 16 * 1024 * 1024
MAX_REQUEST_BYTES = 16 * 1024 * 1024
ENGINES = ("orchestrator.core.javascript", "orchestrator.core.jqtransform")
"""The modules a sandbox process imports: they register the kinds it serves."""

_HEADER = struct.Struct(">I")
_TAIL_BYTES = 8192


class SandboxError(Exception):
    """User code could not be evaluated; the message is one line."""


class Refused(SandboxError):
    """The engine's own answer: the code does not compile, throws, or goes beyond a bound."""


class Starved(Refused):
    """The engine stopped the evaluation at its limit, but the code had less than half the limit in
    CPU time: the machine was busy, not the code slow. `run` tries such an evaluation once more in
    another process; an engine raises it (inside a sandbox process) to ask for that."""


class Overrun(SandboxError):
    """The evaluation ran past its limit; its process was killed."""


class Crashed(SandboxError):
    """The process ended during the evaluation (the message says how: a signal, its last words)."""


class Unavailable(SandboxError):
    """No sandbox process could be started, or none became free in time."""


# ---------------------------------------------------------------- the node's side


class BudgetSpent(SandboxError):
    """The evaluations of one decision used the time it may give them all (decision_budget)."""


class _TimedOut(Exception):
    pass


class _Ended(Exception):
    pass


def _command() -> list[str]:
    return [sys.executable, "-c", "from orchestrator.core.sandbox import _serve; _serve()"]


def _environment() -> dict[str, str]:
    """Nothing of the node's environment (it may hold secrets): where our package is, and UTF-8."""
    root = str(Path(__file__).resolve().parents[2])
    return {"PYTHONPATH": root, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUTF8": "1", "LC_ALL": "C.UTF-8"}


class _Process:
    """One sandbox process and its pipes (non-blocking on this side)."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.started = time.monotonic()
        self.popen = subprocess.Popen(_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=_environment(), cwd="/", close_fds=True)
        assert self.popen.stdin is not None and self.popen.stdout is not None and self.popen.stderr is not None
        self.stdin, self.stdout, self.stderr = (self.popen.stdin.fileno(), self.popen.stdout.fileno(),
                                                self.popen.stderr.fileno())
        for fd in (self.stdin, self.stdout, self.stderr):
            os.set_blocking(fd, False)
        self.ready = False
        self.received = bytearray()
        self.last_words = bytearray()
        self.stderr_open = True
        self.ended = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def exchange(self, request: bytes | None, deadline: float) -> bytes:
        """Send `request` (None: send nothing) and return the next frame the process writes.
        Raises _TimedOut at `deadline`, _Ended if the process closed its end."""
        pending = memoryview(_HEADER.pack(len(request)) + request) if request is not None else None
        poller = select.poll()
        poller.register(self.stdout, select.POLLIN)
        if self.stderr_open:
            poller.register(self.stderr, select.POLLIN)
        if pending is not None:
            poller.register(self.stdin, select.POLLOUT)
        while True:
            frame = self._frame()
            if frame is not None:
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _TimedOut
            for fd, _ in poller.poll(math.ceil(remaining * 1000)):
                if fd == self.stdin and pending is not None:
                    try:
                        written = os.write(fd, pending[:1 << 16])
                    except BlockingIOError:
                        continue
                    except OSError:   # the process is gone (EPIPE)
                        raise _Ended from None
                    pending = pending[written:]
                    if not pending:
                        poller.unregister(fd)
                        pending = None
                elif fd == self.stdout:
                    chunk = self._read(fd)
                    if chunk == b"":
                        raise _Ended
                    self.received += chunk or b""
                elif fd == self.stderr:
                    chunk = self._read(fd)
                    if chunk == b"":
                        poller.unregister(fd)
                        self.stderr_open = False
                    elif chunk:
                        self._keep_words(chunk)

    @staticmethod
    def _read(fd: int) -> bytes | None:
        try:
            return os.read(fd, 1 << 20)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def _keep_words(self, chunk: bytes) -> None:
        self.last_words += chunk
        if len(self.last_words) > _TAIL_BYTES:
            del self.last_words[:len(self.last_words) - _TAIL_BYTES]

    def _frame(self) -> bytes | None:
        if len(self.received) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(self.received)
        if size > MAX_REPLY_BYTES:
            raise _Ended   # not an answer this side reads: the process is ended like a crashed one
        if len(self.received) < _HEADER.size + size:
            return None
        frame = bytes(self.received[_HEADER.size:_HEADER.size + size])
        del self.received[:_HEADER.size + size]
        return frame

    def end(self) -> None:
        """Kill the process (if it still runs), reap it and close the pipes; keeps its last words."""
        if self.ended:
            return
        self.ended = True
        if self.popen.poll() is None:
            self.popen.kill()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:   # not expected after SIGKILL; the pipes are closed anyway
            log.warning("sandbox process %d did not end within 10 s of SIGKILL", self.pid)
        while self.stderr_open:
            chunk = self._read(self.stderr)
            if not chunk:
                break
            self._keep_words(chunk)
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def how_it_ended(self) -> str:
        """'signal SIGABRT: jq: error: cannot allocate memory', say (after `end`)."""
        code = self.popen.returncode
        if code is None:
            how = "still running"
        elif code < 0:
            try:
                how = f"signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"signal {-code}"
        else:
            how = f"exit status {code}"
        words = _last_words(self.last_words.decode("utf-8", "replace"))
        return f"{how}: {words}" if words else how


def _last_words(text: str) -> str:
    """The line of a dying process's stderr that says why, if any (V8 prints pages of stack)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        return ""
    chosen = next((line for line in lines if re.search(r"fatal|error|out of memory|cannot allocate", line, re.I)),
                  lines[-1])
    return chosen if len(chosen) <= 200 else chosen[:197] + "..."


class _Pool:
    def __init__(self, size: int) -> None:
        self.size = size
        self.pid = os.getpid()
        self.cond = threading.Condition()
        self.idle: list[_Process] = []
        self.members: set[_Process] = set()
        self.starting = 0
        self.generation = 0
        self.closed = False

    # ------------------------------------------------------------ members

    def _acquire(self) -> _Process:
        deadline = time.monotonic() + QUEUE_TIMEOUT_S
        dead: list[_Process] = []
        try:
            with self.cond:
                while True:
                    if self.closed:
                        raise Unavailable("the sandbox processes are shut down (the process is exiting)")
                    while self.idle:
                        member = self.idle.pop()
                        if member.alive():
                            return member
                        self.members.discard(member)   # ended while idle (the OOM killer, a signal)
                        dead.append(member)
                    if len(self.members) + self.starting < self.size:
                        spares = self.size - len(self.members) - self.starting - 1
                        self.starting += 1 + spares
                        generation = self.generation
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise Unavailable(f"no sandbox process was free within {QUEUE_TIMEOUT_S:g} s "
                                          "(sandbox.QUEUE_TIMEOUT_S)")
                    self.cond.wait(remaining)
        finally:
            for member in dead:
                member.end()
                log.warning("sandbox process %d ended while idle (%s)", member.pid, member.how_it_ended())
        try:
            member = _Process(generation)
        except BaseException as exc:
            with self.cond:
                self.starting -= 1 + spares
                self.cond.notify_all()
            if isinstance(exc, OSError):
                raise Unavailable(f"a sandbox process could not be started ({exc})") from None
            raise
        with self.cond:
            self.starting -= 1
            self.members.add(member)
        for _ in range(spares):   # the pool's other processes start now, warm by the time they are needed
            self._add_spare(generation)
        return member

    def _add_spare(self, generation: int) -> None:
        """Start a process into the idle list (after the warm ones: it is taken last); the caller
        counted it in `starting`."""
        spare: _Process | None = None
        try:
            spare = _Process(generation)
        except OSError as exc:
            log.warning("a sandbox process could not be started (%s); the next evaluation tries again", exc)
        finally:
            with self.cond:
                self.starting -= 1
                wanted = not self.closed and generation == self.generation
                if spare is not None and wanted:
                    self.members.add(spare)
                    self.idle.insert(0, spare)
                self.cond.notify()
        if spare is not None and not wanted:   # shut down meanwhile
            spare.end()

    def _release(self, member: _Process, healthy: bool) -> None:
        with self.cond:
            keep = (healthy and not self.closed and member.generation == self.generation
                    and len(self.members) <= self.size)
            if keep:
                self.idle.append(member)
                self.cond.notify()
                return
            self.members.discard(member)
            replace = not self.closed and member.generation == self.generation and \
                len(self.members) + self.starting < self.size
            if replace:
                self.starting += 1
            generation = self.generation
            self.cond.notify()
        member.end()
        if replace:   # started now: it warms up while the node goes on
            self._add_spare(generation)

    def shutdown(self, *, final: bool = False) -> None:
        """End every idle process now and every busy one when it is handed back; unless
        `final`, the next evaluation starts new ones."""
        with self.cond:
            self.closed = self.closed or final
            self.generation += 1
            idle, self.idle = self.idle, []
            for member in idle:
                self.members.discard(member)
            self.cond.notify_all()
        for member in idle:
            member.end()

    def resize(self, size: int) -> None:
        """Serve with `size` processes from now on: surplus idle ones end now, busy ones when done."""
        with self.cond:
            self.size = size
            surplus: list[_Process] = []
            while self.idle and len(self.members) > size:
                member = self.idle.pop(0)   # the coldest first
                self.members.discard(member)
                surplus.append(member)
            self.cond.notify_all()
        for member in surplus:
            member.end()

    def pids(self) -> list[int]:
        with self.cond:
            return sorted(member.pid for member in self.members)

    # ------------------------------------------------------------ a request

    def run(self, payload: bytes, limit_ms: int) -> Any:
        member = self._ready_member()
        healthy = False
        try:
            started = time.monotonic()
            try:
                frame = member.exchange(payload, started + (limit_ms + GRACE_MS) / 1000)
            except _TimedOut:
                log.info("sandbox process %d stopped: an evaluation ran longer than %d ms", member.pid,
                         limit_ms + GRACE_MS)
                raise Overrun(f"it ran longer than {limit_ms} ms and was stopped") from None
            except _Ended:
                member.end()
                how = member.how_it_ended()
                log.warning("sandbox process %d ended during an evaluation (%s)", member.pid, how)
                raise Crashed(how) from None
            try:
                answer = json.loads(frame.decode("utf-8", "surrogatepass"))
            except ValueError:
                raise Crashed("its answer could not be read") from None
            healthy = not answer.get("retire")
            if "error" in answer:
                raise (Starved if answer.get("starved") else Refused)(str(answer["error"]))
            return answer.get("result")
        finally:
            self._release(member, healthy)

    def _ready_member(self) -> _Process:
        """A process that has greeted; one that does not within STARTUP_TIMEOUT_S is ended (its last
        words logged) and another is tried once, so a single stuck start fails no evaluation."""
        for attempt in (1, 2):
            member = self._acquire()
            if member.ready:
                return member
            try:
                self._wait_ready(member)
            except Unavailable as exc:
                self._release(member, healthy=False)
                log.warning("sandbox process %d did not start (%s; %s)%s", member.pid, exc, member.how_it_ended(),
                            "; trying another" if attempt == 1 else "")
                if attempt == 2:
                    raise
                continue
            except BaseException:
                self._release(member, healthy=False)
                raise
            return member
        raise AssertionError("unreachable")

    @staticmethod
    def _wait_ready(member: _Process) -> None:
        try:
            frame = member.exchange(None, member.started + STARTUP_TIMEOUT_S)
        except _TimedOut:
            raise Unavailable(f"a sandbox process did not start within {STARTUP_TIMEOUT_S:g} s") from None
        except _Ended:
            member.end()
            how = member.how_it_ended()
            log.error("a sandbox process could not start (%s)", how)
            raise Unavailable(f"a sandbox process could not start ({how})") from None
        if frame != b'{"ready":true}':
            raise Unavailable("a sandbox process started with an unexpected greeting")
        member.ready = True


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()
_SIZE = DEFAULT_PROCESSES


def _pool() -> _Pool:
    global _POOL
    pool = _POOL
    if pool is not None and pool.pid == os.getpid():
        return pool
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():   # none yet, or a forked child's copy: not ours to end
            _POOL = _Pool(_SIZE)
            atexit.register(_POOL.shutdown, final=True)
        return _POOL


DECISION_BUDGET_MS = 5000
"""What the evaluations of one decision may take together. The limit of each evaluation bounds
one script; a decision can hold many (a fork of INLINE tasks, a loop of LAMBDAs: a DO_WHILE of a
few hundred small scripts is ordinary and takes well under this). Such decisions run in a thread
(cluster/deciding.py), so the node's loop does not wait for them; the budget bounds how long one
workflow may keep a thread and a sandbox process: past it the remaining scripts of the decision
fail at once, each task saying why."""

_budget_deadline: ContextVar[float | None] = ContextVar("sandbox_budget_deadline", default=None)


@contextmanager
def decision_budget(budget_ms: int = DECISION_BUDGET_MS) -> Iterator[None]:
    """The evaluations run inside share `budget_ms` of wall-clock time (cluster/deciding.py)."""
    token = _budget_deadline.set(time.monotonic() + budget_ms / 1000)
    try:
        yield
    finally:
        _budget_deadline.reset(token)


def run(kind: str, request: dict[str, Any], limit_ms: int) -> Any:
    """Evaluate `request` (a JSON object) with the handler of `kind` in a sandbox process and
    return its result (JSON data). The evaluation may take `limit_ms` (plus GRACE_MS for the
    transfer), less if the decision's budget has less left: then its process is killed. An
    evaluation the engine stopped at its limit with less than half of it in CPU time (Starved: a
    busy machine, not slow code) is tried once more in another process. Raises Refused (the
    engine's error; Starved the second time), Overrun, BudgetSpent, Crashed or Unavailable, each
    with a one-line message."""
    for attempt in (1, 2):
        allowed_ms = int(limit_ms)
        deadline = _budget_deadline.get()
        if deadline is not None:
            allowed_ms = min(allowed_ms, int((deadline - time.monotonic()) * 1000) - GRACE_MS)
            if allowed_ms <= 0:
                raise BudgetSpent(f"the scripts of one decision may run {DECISION_BUDGET_MS} ms together "
                                  "(sandbox.DECISION_BUDGET_MS) and this decision's were spent before this one")
        payload = json.dumps({**request, "kind": kind, "limit_ms": allowed_ms}, separators=(",", ":"))
        try:
            return _pool().run(payload.encode("ascii"), allowed_ms)
        except Starved:
            if attempt == 2:
                raise
            log.info("a %s evaluation was stopped at its limit with little CPU used (a busy machine): "
                     "running it once more", kind)
        except Overrun:
            if allowed_ms < int(limit_ms):
                raise BudgetSpent(f"it was stopped after {allowed_ms} ms, when the scripts of its decision had "
                                  f"run {DECISION_BUDGET_MS} ms together (sandbox.DECISION_BUDGET_MS)") from None
            raise
    raise AssertionError("unreachable: the second attempt returns or raises")


def configure(*, processes: int) -> None:
    """How many sandbox processes this process may run at once (from 1)."""
    global _SIZE
    if processes < 1:
        raise ValueError("the sandbox needs at least one process")
    _SIZE = processes
    pool = _POOL
    if pool is not None and pool.pid == os.getpid():
        pool.resize(processes)


def shutdown() -> None:
    """End the sandbox processes (busy ones as soon as their evaluation ends). The next
    evaluation starts new ones."""
    pool = _POOL
    if pool is not None and pool.pid == os.getpid():
        pool.shutdown()


def processes() -> list[int]:
    """The process ids of this process's sandbox processes (running or starting)."""
    pool = _POOL
    if pool is None or pool.pid != os.getpid():
        return []
    return pool.pids()


# ---------------------------------------------------------------- the sandbox process's side

Handler = Callable[[dict[str, Any]], str]
"""Answers a request with the JSON text of its result; a ValueError is the user's error."""

_HANDLERS: dict[str, Handler] = {}
_WARM_UPS: list[Callable[[], None]] = []
_RETIRE = False
_INSIDE = False


def handle(kind: str, handler: Handler, warm_up: Callable[[], None] | None = None) -> None:
    """Register how a sandbox process answers requests of `kind` (and what it prepares at start)."""
    _HANDLERS[kind] = handler
    if warm_up is not None and warm_up not in _WARM_UPS:
        _WARM_UPS.append(warm_up)


def retire() -> None:
    """Called by an engine inside a sandbox process whose state it no longer trusts: the process
    ends after answering (the node starts another). Does nothing elsewhere."""
    global _RETIRE
    _RETIRE = True


def inside() -> bool:
    """Whether this is a sandbox process (serving requests), where an engine that needs a fresh
    start retires the process rather than starting anew in it (mini-racer does not survive a
    second context made beside its first)."""
    return _INSIDE


def _serve() -> None:   # pragma: no cover - runs in the sandbox process (tests/unit/core/test_sandbox.py drives it)
    global _INSIDE
    _INSIDE = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # a terminal's Ctrl-C is for the node, which ends us
    channel_in, channel_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)   # what a library prints goes to stderr, never into an answer
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for module in ENGINES:
        importlib.import_module(module)
    for warm_up in _WARM_UPS:
        warm_up()
    _limit_memory()
    _limit_cpu(0)
    _send(channel_out, b'{"ready":true}')
    global _RETIRE
    served = 0
    while True:
        frame = _receive(channel_in)
        if frame is None:   # the node closed its end: it is done with us, or gone
            os._exit(0)
        _RETIRE = False
        answer = _answer(frame)
        served += 1
        retiring = _RETIRE or served >= REUSE_LIMIT
        if retiring:
            answer = answer[:-1] + ',"retire":true}'
        _send(channel_out, answer.encode("utf-8", "surrogatepass"))
        if retiring:
            os._exit(0)


def _answer(frame: bytes) -> str:   # pragma: no cover - runs in the sandbox process
    try:
        request = json.loads(frame)
        handler = _HANDLERS[request["kind"]]
        _limit_cpu(int(request["limit_ms"]))
    except (ValueError, KeyError, TypeError) as exc:
        retire()
        return json.dumps({"error": f"the sandbox could not read the request ({type(exc).__name__})"})
    try:
        result = handler(request)
    except MemoryError:
        retire()
        return json.dumps({"error": f"it used more memory than the limit of {MEMORY_BYTES >> 20} MiB "
                                    "(sandbox.MEMORY_BYTES)"})
    except RecursionError:
        retire()
        return json.dumps({"error": "it nests too deeply"})
    except Starved as exc:   # the engine retired the process already (its context was stopped)
        return json.dumps({"error": str(exc), "starved": True})
    except ValueError as exc:
        return json.dumps({"error": str(exc)})
    except Exception as exc:   # an engine's fault, not the user's: a fresh process for the next one
        retire()
        return json.dumps({"error": f"the engine failed: {type(exc).__name__}: {exc}"[:500]})
    return '{"result":' + result + "}"


def _limit_cpu(limit_ms: int) -> None:   # pragma: no cover - runs in the sandbox process
    """RLIMIT_CPU: what this process has used + this request's limit + 2 s (then SIGXCPU ends it)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + (limit_ms + GRACE_MS) / 1000) + 2
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _limit_memory() -> None:   # pragma: no cover - runs in the sandbox process
    """RLIMIT_DATA: the private memory mapped now (the engines started) + MEMORY_BYTES."""
    try:
        with open("/proc/self/status") as status:
            found = re.search(r"^VmData:\s+(\d+) kB", status.read(), re.M)
    except OSError:
        found = None
    if found is None:   # not Linux: the time limits still hold
        return
    limit = int(found.group(1)) * 1024 + MEMORY_BYTES
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def _receive(fd: int) -> bytes | None:   # pragma: no cover - runs in the sandbox process
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_REQUEST_BYTES:
        return None
    return _read_exactly(fd, size)


def _read_exactly(fd: int, size: int) -> bytes | None:   # pragma: no cover - runs in the sandbox process
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, min(size - len(data), 1 << 20))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _send(fd: int, data: bytes) -> None:   # pragma: no cover - runs in the sandbox process
    view = memoryview(_HEADER.pack(len(data)) + data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:   # the node is gone
        os._exit(0)
