"""The tiers of the Python baseline: the same cascade as tierhost's load benchmark.

Plain Python with no web framework, so a supervised tier process (`app.py` with
BASELINE_ISOLATION=process) imports only this module and orjson.

    primary      tierhost's `chaos` tier in `flaky` mode: on a fixed share of request ids
                 (FNV-1a 64 of the id) it faults, as BASELINE_FAULT says; else allow/0.1/0.9
    small-model  logistic regression on amount and account_age_days      min_confidence 0.7
    rules        the fraud rules of plugins/rules (RuleBasedFallback)      min_confidence 0.3
    safe-default review, score 0, confidence 0, flagged for review (in app.py)

The faults (BASELINE_FAULT, on BASELINE_FAULT_RATE of the request ids):
    exception    raises RuntimeError                         (tierhost: chaos fault "trap")
    hang         time.sleep(BASELINE_HANG_S, default 2 s), then answers   ("sleep")
    spin         busy loop for BASELINE_SPIN_S (default 2 s), then answers ("spin")
    memory-bomb  appends 1 MiB bytearrays until MemoryError              ("memory-bomb")

The spin is bounded in time because nothing in a Python process can stop a spinning thread:
an unbounded one would hold a thread (and its share of the GIL) for the life of the worker.
tierhost's spinning tier has no bound at all; its fuel limit stops it. The memory bomb's
blocks are zero-filled by CPython (the pages are touched, as a real leak touches them); the
process's address-space limit (`ulimit -v` in run.sh, RLIMIT_AS in a tier process) is what
stops it, with a MemoryError.
"""

from __future__ import annotations

import math
import os
import time
from typing import NamedTuple

MAX_OUTPUT_BYTES = 16 * 1024  # label + reasons, tierhost's default max_output_bytes


class TierError(Exception):
    """A tier could not answer from this input (missing or mistyped feature)."""


# --------------------------------------------------------------------------------------------
# Typed feature access (same rules as the tier SDK's `Features`)
# --------------------------------------------------------------------------------------------


def number(features: dict, name: str) -> float | None:
    """Integer, float or boolean (as 0/1); absent or null gives None; text is an error."""
    value = features.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        raise TierError(f"invalid-input: feature `{name}` must be a number, got text")
    return float(value)


def require_number(features: dict, name: str) -> float:
    value = number(features, name)
    if value is None:
        raise TierError(f"missing-feature: {name}")
    return value


def flag(features: dict, name: str) -> bool | None:
    """Boolean, or integer 0/1; absent or null gives None."""
    value = features.get(name)
    if value is None or value is True or value is False:
        return value
    if type(value) is int and value in (0, 1):
        return value == 1
    raise TierError(f"invalid-input: feature `{name}` must be a boolean")


def text(features: dict, name: str) -> str | None:
    value = features.get(name)
    if value is None or isinstance(value, str):
        return value
    raise TierError(f"invalid-input: feature `{name}` must be text")


# --------------------------------------------------------------------------------------------
# The tiers
# --------------------------------------------------------------------------------------------


class Prediction(NamedTuple):
    label: str
    score: float
    confidence: float
    reasons: list


FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
U64 = (1 << 64) - 1


def fnv1a64(data: bytes) -> int:
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & U64
    return h


FAULTS = ("exception", "hang", "spin", "memory-bomb")


class FlakyPrimary:
    """The primary model, as tierhost's `chaos` tier in `flaky` mode: it faults on a fixed,
    deterministic share of request ids (so both services fault on the same requests)."""

    name = "primary"
    min_confidence = 0.8
    labels = frozenset({"allow", "block"})

    def __init__(self, fault_rate: float, fault: str, hang_s: float, spin_s: float):
        if fault not in FAULTS:
            raise ValueError(f"BASELINE_FAULT must be one of {', '.join(FAULTS)}, not {fault!r}")
        self.fault_rate = fault_rate
        self.fault = fault
        self.hang_s = hang_s
        self.spin_s = spin_s

    def predict(self, request_id: str, features: dict) -> Prediction:
        if fnv1a64(request_id.encode()) % 10_000 < self.fault_rate * 10_000.0:
            if self.fault == "exception":
                raise RuntimeError("primary model crashed (simulated)")
            if self.fault == "hang":
                time.sleep(self.hang_s)
            elif self.fault == "spin":
                end = time.perf_counter() + self.spin_s
                x = 0
                while time.perf_counter() < end:
                    for i in range(1000):
                        x += i
            else:  # memory-bomb
                hoard = []
                while True:
                    hoard.append(bytearray(1 << 20))
        return Prediction("allow", 0.1, 0.9, ["chaos:flaky-ok"])


class SmallModel:
    """Logistic regression on two features (tierhost's `linear` tier with the bench params)."""

    name = "small-model"
    min_confidence = 0.7
    labels = frozenset({"allow", "block"})
    bias = -1.5
    # (feature, weight, scale)
    weights = (("amount", 0.8, 1000.0), ("account_age_days", -0.03, 1.0))

    def predict(self, request_id: str, features: dict) -> Prediction:
        z = self.bias
        terms = []
        for name, weight, scale in self.weights:
            contribution = weight * require_number(features, name) / scale
            z += contribution
            if contribution != 0.0:
                terms.append((name, contribution))
        terms.sort(key=lambda t: abs(t[1]), reverse=True)
        reasons = [f"{name}:{c:+.3f}" for name, c in terms[:3]]
        try:
            p = 1.0 / (1.0 + math.exp(-z))
        except OverflowError:  # z far below zero: exp(-z) is +inf, as in f64
            p = 0.0
        if p >= 0.5:
            return Prediction("block", p, p, reasons)
        return Prediction("allow", p, 1.0 - p, reasons)


class RuleBasedFallback:
    """The fraud rules of plugins/rules with its default params (the article's
    `RuleBasedFallback`, but `amount` is required and a missing account age counts as new)."""

    name = "rules"
    min_confidence = 0.3
    labels = frozenset({"allow", "review", "block"})
    high_risk_categories = frozenset({"gambling", "crypto", "wire_transfer"})

    def predict(self, request_id: str, features: dict) -> Prediction:
        score = 0.0
        reasons = []
        if require_number(features, "amount") > 5000.0:
            score += 0.30
            reasons.append("high_amount")
        age = number(features, "account_age_days")
        if (0.0 if age is None else age) < 7.0:
            score += 0.25
            reasons.append("new_account")
        if text(features, "merchant_category") in self.high_risk_categories:
            score += 0.20
            reasons.append("high_risk_category")
        international = flag(features, "is_international") or False
        history = flag(features, "has_international_history") or False
        if international and not history:
            score += 0.15
            reasons.append("unusual_international")
        score = min(max(score, 0.0), 1.0)
        if score >= 0.60:
            label = "block"
        elif score >= 0.30:
            label = "review"
        else:
            label = "allow"
        return Prediction(label, score, 0.4, reasons)


def rejection(pred: Prediction, tier) -> str | None:
    """Why an answer may not be served (a reason kind), or None to serve it; the same checks
    as tierhost's acceptance and min-confidence policies."""
    if not math.isfinite(pred.score):
        return "invalid-output"
    if not 0.0 <= pred.confidence <= 1.0:  # also false for NaN
        return "invalid-output"
    if not pred.label or pred.label not in tier.labels:
        return "invalid-output"
    if len(pred.label) + sum(map(len, pred.reasons)) > MAX_OUTPUT_BYTES:
        return "invalid-output"
    if pred.confidence < tier.min_confidence:
        return "low-confidence"
    return None


def from_env() -> list:
    """The three tiers, configured from the environment (see the module docstring)."""
    return [
        FlakyPrimary(
            float(os.environ.get("BASELINE_FAULT_RATE", "0.2")),
            os.environ.get("BASELINE_FAULT", "exception"),
            float(os.environ.get("BASELINE_HANG_S", "2.0")),
            float(os.environ.get("BASELINE_SPIN_S", "2.0")),
        ),
        SmallModel(),
        RuleBasedFallback(),
    ]


# --------------------------------------------------------------------------------------------
# A tier in its own process (BASELINE_ISOLATION=process)
# --------------------------------------------------------------------------------------------


def serve(index: int, conn, memory_limit_mb: int) -> None:
    """Body of a supervised tier process: answers `(request_id, features)` messages on `conn`
    with `["ok", label, score, confidence, reasons]` or `["error", kind, detail]`, one at a
    time, until the pipe closes. After a MemoryError (whose hoard is freed by then) it answers
    `["error", "memory-limit", detail, "exit"]` and ends (its state is suspect); the supervisor
    starts a new one."""
    import orjson  # imported here so the forkserver's preload of this module stays light

    if memory_limit_mb > 0:
        import resource

        limit = memory_limit_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    tier = from_env()[index]
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        request_id, features = orjson.loads(message)
        try:
            pred = tier.predict(request_id, features)
        except MemoryError as e:
            try:
                conn.send_bytes(orjson.dumps(["error", "memory-limit", f"MemoryError: {e}",
                                              "exit"]))
            finally:
                os._exit(3)
        except TierError as e:
            reply = ["error", "tier-error", str(e)]
        except Exception as e:  # the model itself blew up: tierhost calls this a trap
            reply = ["error", "trap", f"{type(e).__name__}: {e}"]
        else:
            reply = ["ok", pred.label, pred.score, pred.confidence, pred.reasons]
        conn.send_bytes(orjson.dumps(reply))
