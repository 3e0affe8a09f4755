"""Hand-written Python baseline for the tierhost load benchmark.

The service a team would write instead of tierhost, following the `ResilientPredictor` pattern
of "Graceful Degradation in ML Systems" (reference article 004): each fallback level is called
with a timeout (the article's `_predict_with_timeout`), inside its own try/except, its answer is
validated, and the first acceptable answer is served; when every level fails, a constant safe
default answers. It serves the same cascade as tierhost's benchmark (see tiers.py), with the
same thresholds, the same limits on time (20 ms per tier call, 100 ms per request, as tierhost's
defaults `deadline_ms` and the bench's `budget_ms`) and the same answer fields: decision,
provenance (`served_by` with plugin and version), `degraded`, `elapsed_us` and the trail (tier,
version, step, reason kind, message, elapsed_us). No circuit breaker, as in tierhost's bench
cascade (the issue asks for one in both or in neither).

Two ways to run a tier call with a timeout (BASELINE_ISOLATION):

    thread   (default) in-process: each tier has its own thread pool (BASELINE_THREADS threads,
             default 32; separate pools so a stuck primary cannot starve its fallbacks), and the
             request waits for the call with asyncio.wait_for. A call that times out is given
             up on, but its thread runs on: Python cannot stop a thread, so a hung or spinning
             call keeps its thread (and, spinning, its share of the GIL) until it ends.
    process  each tier runs in supervised worker processes (BASELINE_PROCS per tier and per
             uvicorn worker, default 4) started from a multiprocessing forkserver, each with its
             own address-space limit (BASELINE_TIER_MEMORY_MB, default 256). A call is one
             message each way on a pipe; a call that times out, or a process that dies (a
             MemoryError ends it), gets the process SIGKILLed and a new one started. What a
             careful team would build to get real isolation from Python.

Environment:
    BASELINE_FAULT, BASELINE_FAULT_RATE, BASELINE_HANG_S, BASELINE_SPIN_S   see tiers.py
    BASELINE_ISOLATION   thread | process (above)
    BASELINE_DEADLINE_MS per tier call (default 20), BASELINE_BUDGET_MS per request (100)
    BASELINE_EVENTS      file to which each worker appends `worker-start PID` when it starts
                         and `tier-restart TIER PID WHY` when it replaces a tier process (the
                         benchmark counts restarts from it)
    BASELINE_LOG_LEVEL   level of the `baseline` logger (default ERROR, so the per-fallback
                         warnings are filtered out, as in tierhost's benchmark)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import tiers
from tiers import Prediction, TierError, rejection

# --------------------------------------------------------------------------------------------
# Logging, metrics and events
# --------------------------------------------------------------------------------------------

logger = logging.getLogger("baseline")
logger.setLevel(os.environ.get("BASELINE_LOG_LEVEL", "ERROR").upper())
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(_handler)
    logger.propagate = False

# Per worker process: fallbacks by (tier, reason kind), answers by serving tier, restarts.
FALLBACKS: Counter[tuple[str, str]] = Counter()
SERVED: Counter[str] = Counter()
RESTARTS: Counter[str] = Counter()

EVENTS = os.environ.get("BASELINE_EVENTS")


def event(line: str) -> None:
    """Appends one line to the events file (one write with O_APPEND: lines never interleave)."""
    if EVENTS:
        fd = os.open(EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------------
# Request decoding (same rules as tierhost's host/src/request.rs)
# --------------------------------------------------------------------------------------------

MAX_FEATURES = 1024
MAX_TEXT_BYTES = 64 * 1024
MAX_ID_BYTES = 256
I64_MIN, I64_MAX = -(2**63), 2**63 - 1

_next_id = itertools.count(1)


class BadRequest(Exception):
    """The request is not `{"id": "...", "features": {...}}` with scalar feature values."""


def decode_request(body: bytes) -> tuple[str, dict]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"malformed JSON: {e}") from None
    if not isinstance(payload, dict):
        raise BadRequest("request must be a JSON object")
    if "features" not in payload:
        raise BadRequest("missing field `features`")
    features = payload["features"]
    if not isinstance(features, dict):
        raise BadRequest("`features` must be an object")
    if len(payload) > 2 or (len(payload) == 2 and "id" not in payload):
        unknown = sorted(k for k in payload if k not in ("id", "features"))
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    rid = payload.get("id")
    if rid is None:
        rid = f"req-{next(_next_id)}"
    elif not isinstance(rid, str):
        raise BadRequest("`id` must be a string")
    elif not rid:
        raise BadRequest("`id` is empty")
    elif len(rid.encode()) > MAX_ID_BYTES:
        raise BadRequest(f"`id` is longer than {MAX_ID_BYTES} bytes")
    if len(features) > MAX_FEATURES:
        raise BadRequest(f"{len(features)} features, the limit is {MAX_FEATURES}")
    for name, value in features.items():
        if not name or len(name) > MAX_TEXT_BYTES:
            raise BadRequest(f"feature name must be 1..={MAX_TEXT_BYTES} bytes")
        kind = type(value)
        if kind is str:
            if len(value) > MAX_TEXT_BYTES and len(value.encode()) > MAX_TEXT_BYTES:
                raise BadRequest(f"feature `{name}`: text longer than {MAX_TEXT_BYTES} bytes")
        elif kind is int:
            if not I64_MIN <= value <= I64_MAX:
                raise BadRequest(f"feature `{name}`: integer does not fit in 64 bits")
        elif kind in (list, dict):
            raise BadRequest(f"feature `{name}`: arrays and objects are not supported")
        # float (always finite from orjson), bool and None are fine as they are
    return rid, features


# --------------------------------------------------------------------------------------------
# Calling a tier with a timeout
# --------------------------------------------------------------------------------------------

# Plugin name and version of each tier, for the provenance (tierhost reports the plugin's).
PLUGINS = {"primary": ("chaos", "0.1.0"), "small-model": ("logistic", "0.1.0"),
           "rules": ("fraud-rules", "0.1.0")}


class Shed(Exception):
    """No tier process became free within the call's time: the tier was not called."""


class TierFault(Exception):
    """The tier process reported a fault, or died: `kind` is the fallback reason kind."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class ThreadRunner:
    """In-process calls, each tier on its own thread pool (the article's
    `_predict_with_timeout`, made async)."""

    def __init__(self, tier_list, threads: int):
        self.tiers = tier_list
        self.pools = [ThreadPoolExecutor(max_workers=threads, thread_name_prefix=t.name)
                      for t in tier_list]

    async def call(self, index: int, request_id: str, features: dict, timeout: float,
                   budget_end: float):
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self.pools[index], self.tiers[index].predict, request_id,
                                    features)
        return await asyncio.wait_for(call, timeout)

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown(wait=False, cancel_futures=True)


def _set_ready(future) -> None:
    if not future.done():
        future.set_result(None)


class TierProcesses:
    """The supervised processes of one tier: a queue of idle ones; a call takes one, sends the
    request, waits for the reply within the timeout; on a timeout or a crash the process is
    killed and replaced (in the background, counted in RESTARTS and the events file)."""

    def __init__(self, ctx, index: int, name: str, size: int, memory_mb: int, restarter):
        self.ctx, self.index, self.name, self.memory_mb = ctx, index, name, memory_mb
        self.restarter = restarter
        self.idle: asyncio.Queue = asyncio.Queue()
        self.all = set()
        for _ in range(size):
            self.idle.put_nowait(self._start())

    def _start(self):
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=tiers.serve, args=(self.index, child, self.memory_mb),
                                daemon=True, name=f"tier-{self.name}")
        proc.start()
        child.close()
        worker = (proc, parent)
        self.all.add(worker)
        return worker

    async def call(self, request_id: str, features: dict, timeout: float, budget_end: float):
        loop = asyncio.get_running_loop()
        try:
            worker = self.idle.get_nowait()
        except asyncio.QueueEmpty:
            # Every process is busy (or being restarted): wait for one, at most the call's
            # timeout; the call itself then gets its whole timeout (within the request's
            # budget), as a tier call in tierhost gets its deadline from when it starts.
            # Counting the wait against the call would kill healthy processes whenever the
            # machine is busy.
            try:
                worker = await asyncio.wait_for(self.idle.get(), timeout)
            except TimeoutError:
                raise Shed(f"no free {self.name} process within {timeout * 1000:.1f} ms") from None
        deadline = min(loop.time() + timeout, budget_end)
        proc, conn = worker
        fd = conn.fileno()
        ready = loop.create_future()
        loop.add_reader(fd, _set_ready, ready)
        try:
            conn.send_bytes(orjson.dumps((request_id, features)))
            await asyncio.wait_for(ready, max(deadline - loop.time(), 0.0))
            try:
                reply = orjson.loads(conn.recv_bytes())
            except (EOFError, OSError):
                raise TierFault("trap", f"{self.name} process {proc.pid} died") from None
        except BaseException as e:
            loop.remove_reader(fd)
            self._replace(worker, type(e).__name__)
            raise
        loop.remove_reader(fd)
        if reply[0] == "ok":
            self.idle.put_nowait(worker)
            return Prediction(reply[1], reply[2], reply[3], reply[4])
        if len(reply) > 3:  # the process is ending (after a MemoryError)
            self._replace(worker, reply[1])
        else:
            self.idle.put_nowait(worker)
        if reply[1] == "tier-error":
            raise TierError(reply[2])
        raise TierFault(reply[1], reply[2])

    def _replace(self, worker, why: str) -> None:
        proc, conn = worker
        self.all.discard(worker)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        RESTARTS[self.name] += 1
        event(f"tier-restart {self.name} {proc.pid} {why}")
        loop = asyncio.get_running_loop()

        def restart():
            conn.close()
            proc.join()
            proc.close()
            new = self._start()
            loop.call_soon_threadsafe(self.idle.put_nowait, new)

        self.restarter.submit(restart)

    def close(self) -> None:
        for proc, conn in list(self.all):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(proc.pid, signal.SIGKILL)
            conn.close()


class ProcessRunner:
    def __init__(self, tier_list, procs: int, memory_mb: int):
        import multiprocessing

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["tiers", "orjson"])
        self.restarter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="restarter")
        self.pools = [TierProcesses(ctx, i, t.name, procs, memory_mb, self.restarter)
                      for i, t in enumerate(tier_list)]

    async def call(self, index: int, request_id: str, features: dict, timeout: float,
                   budget_end: float):
        return await self.pools[index].call(request_id, features, timeout, budget_end)

    def close(self) -> None:
        self.restarter.shutdown(wait=False, cancel_futures=True)
        for pool in self.pools:
            pool.close()


# --------------------------------------------------------------------------------------------
# The cascade (ResilientPredictor)
# --------------------------------------------------------------------------------------------

SAFE_DEFAULT = {
    "outcome": "answer",
    "label": "review",
    "score": 0.0,
    "confidence": 0.0,
    "reasons": ["safe_default", "flag_for_review"],
}


class ResilientPredictor:
    def __init__(self, tier_list, runner, deadline_s: float, budget_s: float):
        self.tiers = tuple(tier_list)
        self.runner = runner
        self.deadline_s = deadline_s
        self.budget_s = budget_s

    async def predict(self, request_id: str, features: dict) -> dict:
        started = time.perf_counter()
        budget_end = asyncio.get_running_loop().time() + self.budget_s
        trail = []
        for index, tier in enumerate(self.tiers):
            plugin, version = PLUGINS[tier.name]
            t0 = time.perf_counter()
            left = self.budget_s - (t0 - started)
            if left <= 0.0:
                kind, detail = "budget-exhausted", "no time left in the request budget"
                trail.append({"tier": tier.name, "version": version, "step": "skipped",
                              "reason": {"kind": kind}, "message": detail, "elapsed_us": 0})
                FALLBACKS[(tier.name, kind)] += 1
                continue
            timeout = min(self.deadline_s, left)
            try:
                pred = await self.runner.call(index, request_id, features, timeout, budget_end)
            except TimeoutError:
                kind, detail = "deadline", f"no answer within {timeout * 1000:.1f} ms"
            except Shed as e:
                kind, detail = "shed", str(e)
            except TierError as e:
                kind, detail = "tier-error", str(e)
            except TierFault as e:
                kind, detail = e.kind, e.detail
            except MemoryError as e:
                kind, detail = "memory-limit", f"MemoryError: {e}"
            except Exception as e:  # the model itself blew up: tierhost calls this a trap
                kind, detail = "trap", f"{type(e).__name__}: {e}"
            else:
                kind = rejection(pred, tier)
                if kind is None:
                    trail.append({"tier": tier.name, "version": version, "step": "served",
                                  "elapsed_us": int((time.perf_counter() - t0) * 1e6)})
                    SERVED[tier.name] += 1
                    return {
                        "request_id": request_id,
                        "decision": {
                            "outcome": "answer",
                            "label": pred.label,
                            "score": pred.score,
                            "confidence": pred.confidence,
                            "reasons": pred.reasons,
                        },
                        "served_by": {"tier": tier.name, "plugin": plugin, "version": version},
                        "degraded": index > 0,
                        "elapsed_us": int((time.perf_counter() - started) * 1e6),
                        "trail": trail,
                    }
                detail = f"label={pred.label} score={pred.score} confidence={pred.confidence}"
            FALLBACKS[(tier.name, kind)] += 1
            logger.warning("request %s: tier %s fell through: %s (%s)",
                           request_id, tier.name, kind, detail)
            trail.append({"tier": tier.name, "version": version, "step": "fell-through",
                          "reason": {"kind": kind}, "message": detail,
                          "elapsed_us": int((time.perf_counter() - t0) * 1e6)})
        SERVED["safe-default"] += 1
        logger.warning("request %s: served by the safe default", request_id)
        return {
            "request_id": request_id,
            "decision": SAFE_DEFAULT,
            "served_by": {"tier": "safe-default"},
            "degraded": True,
            "elapsed_us": int((time.perf_counter() - started) * 1e6),
            "trail": trail,
        }


ISOLATION = os.environ.get("BASELINE_ISOLATION", "thread")
if ISOLATION not in ("thread", "process"):
    raise SystemExit(f"BASELINE_ISOLATION must be thread or process, not {ISOLATION!r}")

predictor: ResilientPredictor | None = None

# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


class ORJSONResponse(Response):
    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content)


async def predict(request: Request) -> Response:
    try:
        request_id, features = decode_request(await request.body())
    except BadRequest as e:
        return ORJSONResponse({"error": str(e)}, status_code=400)
    return ORJSONResponse(await predictor.predict(request_id, features))


async def healthz(request: Request) -> Response:
    return ORJSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    """This worker's counters (each uvicorn worker process keeps its own)."""
    return ORJSONResponse({
        "pid": os.getpid(),
        "isolation": ISOLATION,
        "threads": threading.active_count(),
        "served": dict(SERVED),
        "fallbacks": {f"{tier}/{kind}": n for (tier, kind), n in FALLBACKS.items()},
        "tier_process_restarts": dict(RESTARTS),
    })


@contextlib.asynccontextmanager
async def lifespan(app):
    global predictor
    tier_list = tiers.from_env()
    if ISOLATION == "thread":
        runner = ThreadRunner(tier_list, int(os.environ.get("BASELINE_THREADS", "32")))
    else:
        runner = ProcessRunner(tier_list, int(os.environ.get("BASELINE_PROCS", "4")),
                               int(os.environ.get("BASELINE_TIER_MEMORY_MB", "256")))
    predictor = ResilientPredictor(
        tier_list, runner,
        float(os.environ.get("BASELINE_DEADLINE_MS", "20")) / 1000.0,
        float(os.environ.get("BASELINE_BUDGET_MS", "100")) / 1000.0,
    )
    event(f"worker-start {os.getpid()}")
    try:
        yield
    finally:
        runner.close()


app = Starlette(routes=[
    Route("/v1/predict", predict, methods=["POST"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
], lifespan=lifespan)
