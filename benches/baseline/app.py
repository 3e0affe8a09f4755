"""Hand-written Python baseline for the tierhost load benchmark.

The service a team would write instead of tierhost, following the `ResilientPredictor` pattern
of "Graceful Degradation in ML Systems" (reference article 004): each fallback level is tried in
its own try/except, its answer is validated, and the first acceptable answer is served; when
every level fails, a constant safe default answers. It serves the same cascade as tierhost's
benchmark, with the same thresholds and the same response shape:

    primary      "flaky" model: crashes on a fixed share of request ids (FNV-1a), else allow/0.9
    small-model  logistic regression on amount and account_age_days      min_confidence 0.7
    rules        the fraud rules of plugins/rules (RuleBasedFallback)      min_confidence 0.3
    safe-default review, score 0, confidence 0, flagged for review

Unlike tierhost, the tiers run in-process with no sandbox: no fuel, memory or deadline limits,
no isolation between tiers. A real model crash here (segfault, OOM, hang) would take the worker
down with it; the simulated one is a Python exception.

Environment:
    BASELINE_FAULT_RATE  share of request ids on which the primary crashes (default 0.2)
    BASELINE_LOG_LEVEL   level of the `baseline` logger (default ERROR, so the per-fallback
                         warnings are filtered out, as in tierhost's benchmark)
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections import Counter
from typing import NamedTuple

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# --------------------------------------------------------------------------------------------
# Logging and metrics
# --------------------------------------------------------------------------------------------

logger = logging.getLogger("baseline")
logger.setLevel(os.environ.get("BASELINE_LOG_LEVEL", "ERROR").upper())
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(_handler)
    logger.propagate = False

# Per worker process: fallbacks by (tier, reason kind) and answers by serving tier.
FALLBACKS: Counter[tuple[str, str]] = Counter()
SERVED: Counter[str] = Counter()

# --------------------------------------------------------------------------------------------
# Request decoding (same rules as tierhost's host/src/request.rs)
# --------------------------------------------------------------------------------------------

MAX_FEATURES = 1024
MAX_TEXT_BYTES = 64 * 1024
MAX_ID_BYTES = 256
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
MAX_OUTPUT_BYTES = 16 * 1024  # label + reasons, tierhost's default max_output_bytes

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
# Typed feature access (same rules as the tier SDK's `Features`)
# --------------------------------------------------------------------------------------------


class TierError(Exception):
    """A tier could not answer from this input (missing or mistyped feature)."""


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


class FlakyPrimary:
    """The primary model, as tierhost's `chaos` tier in `flaky` mode: it crashes on a fixed,
    deterministic share of request ids (so both services fault on the same requests)."""

    name = "primary"
    min_confidence = 0.8
    labels = frozenset({"allow", "block"})

    def __init__(self, fault_rate: float):
        self.fault_rate = fault_rate

    def predict(self, request_id: str, features: dict) -> Prediction:
        if fnv1a64(request_id.encode()) % 10_000 < self.fault_rate * 10_000.0:
            raise RuntimeError("primary model crashed (simulated)")
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


# The safe default: a constant, no dependencies, cannot fail.
SAFE_DEFAULT = {
    "outcome": "answer",
    "label": "review",
    "score": 0.0,
    "confidence": 0.0,
    "reasons": ["safe_default", "flag_for_review"],
}


def rejection(pred: Prediction, tier) -> str | None:
    """Why an answer may not be served (a reason kind), or None to serve it."""
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


# --------------------------------------------------------------------------------------------
# The cascade (ResilientPredictor)
# --------------------------------------------------------------------------------------------


class ResilientPredictor:
    def __init__(self, tiers):
        self.tiers = tuple(tiers)

    def predict(self, request_id: str, features: dict) -> dict:
        trail = []
        for tier in self.tiers:
            try:
                pred = tier.predict(request_id, features)
            except TierError as e:
                kind, detail = "tier-error", str(e)
            except Exception as e:  # the model itself blew up: tierhost calls this a trap
                kind, detail = "trap", f"{type(e).__name__}: {e}"
            else:
                kind = rejection(pred, tier)
                if kind is None:
                    trail.append({"tier": tier.name, "step": "served"})
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
                        "served_by": {"tier": tier.name},
                        "degraded": tier is not self.tiers[0],
                        "trail": trail,
                    }
                detail = f"label={pred.label} score={pred.score} confidence={pred.confidence}"
            FALLBACKS[(tier.name, kind)] += 1
            logger.warning("request %s: tier %s fell through: %s (%s)",
                           request_id, tier.name, kind, detail)
            trail.append({"tier": tier.name, "step": "fell-through", "reason": {"kind": kind}})
        SERVED["safe-default"] += 1
        logger.warning("request %s: served by the safe default", request_id)
        return {
            "request_id": request_id,
            "decision": SAFE_DEFAULT,
            "served_by": {"tier": "safe-default"},
            "degraded": True,
            "trail": trail,
        }


predictor = ResilientPredictor([
    FlakyPrimary(float(os.environ.get("BASELINE_FAULT_RATE", "0.2"))),
    SmallModel(),
    RuleBasedFallback(),
])

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
    return ORJSONResponse(predictor.predict(request_id, features))


async def healthz(request: Request) -> Response:
    return ORJSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    """This worker's counters (each uvicorn worker process keeps its own)."""
    return ORJSONResponse({
        "pid": os.getpid(),
        "served": dict(SERVED),
        "fallbacks": {f"{tier}/{kind}": n for (tier, kind), n in FALLBACKS.items()},
    })


app = Starlette(routes=[
    Route("/v1/predict", predict, methods=["POST"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
])
