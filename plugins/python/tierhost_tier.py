"""Guest SDK for tierhost tiers written in Python (built with componentize-py).

The same helpers as the Rust SDK (plugins/sdk): typed, by-name access to a request's features
and to the tier's params, and constructors for answers, abstentions and typed errors. A tier
module defines `class WitWorld` with `describe` and `predict`:

    import tierhost_tier as t

    class WitWorld(t.Tier):
        def describe(self):
            return t.description("big-amounts", "0.1.0", t.Kind.RULES)

        def predict(self, req):
            big = t.Features(req).require_number("amount") > 1000.0
            return t.answer("review" if big else "allow", 0.9)

Errors are raised: `t.Features.require_number` raises `missing-feature` or `invalid-input` the
way the Rust SDK returns them, and the host falls back with that reason.
"""
from componentize_py_types import Err
from wit_world import WitWorld as _World
from wit_world.imports import host
from wit_world.imports.types import (
    Description,
    Outcome_Abstain,
    Outcome_Answer,
    Prediction,
    TierError_BadParams,
    TierError_Internal,
    TierError_InvalidInput,
    TierError_MissingFeature,
    TierKind,
    Value_Boolean,
    Value_Float,
    Value_Integer,
    Value_Null,
    Value_Text,
)

Tier = _World
Kind = TierKind


def description(name, version, kind):
    """What `describe` returns."""
    return Description(name=name, version=version, kind=kind)


def answer(label, confidence, score=None, reasons=()):
    """An answer the host may serve; the score defaults to the confidence."""
    return Outcome_Answer(
        Prediction(
            label=label,
            score=float(confidence if score is None else score),
            confidence=float(confidence),
            reasons=list(reasons),
        )
    )


def abstain(why):
    """Declines to answer, saying why: the host goes down one tier."""
    return Outcome_Abstain(why)


def invalid_input(message):
    """The error to raise for a malformed request."""
    return Err(TierError_InvalidInput(message))


def missing_feature(name):
    """The error to raise when a needed feature is absent or null."""
    return Err(TierError_MissingFeature(name))


def bad_params(message):
    """The error to raise for missing or invalid params."""
    return Err(TierError_BadParams(message))


def internal(message):
    """The error to raise when anything else goes wrong."""
    return Err(TierError_Internal(message))


def log(level, message):
    """One log line through the host (`host.LogLevel.INFO`, ...), bounded per call."""
    host.log(level, message)


def model():
    """The read-only model document granted to this tier (empty bytes when none)."""
    return host.model()


class Features:
    """Typed, by-name access to a request's features."""

    def __init__(self, req):
        self._features = req.features

    def get(self, name):
        """The raw value of a feature (the first of that name), None when absent."""
        for feature in self._features:
            if feature.name == name:
                return feature.value
        return None

    def number(self, name):
        """A numeric feature (booleans count as 0/1); absent or null gives None."""
        value = self.get(name)
        if value is None or isinstance(value, Value_Null):
            return None
        if isinstance(value, Value_Boolean):
            return 1.0 if value.value else 0.0
        if isinstance(value, Value_Text):
            raise invalid_input(f"feature `{name}` must be a number, got text")
        if isinstance(value, Value_Integer):
            return float(value.value)
        return value.value

    def require_number(self, name):
        """A numeric feature that must be present (raises missing-feature)."""
        value = self.number(name)
        if value is None:
            raise missing_feature(name)
        return value

    def flag(self, name):
        """A boolean feature (integers 0/1 accepted); absent or null gives None."""
        value = self.get(name)
        if value is None or isinstance(value, Value_Null):
            return None
        if isinstance(value, Value_Boolean):
            return value.value
        if isinstance(value, Value_Integer) and value.value in (0, 1):
            return value.value == 1
        raise invalid_input(f"feature `{name}` must be a boolean")

    def text(self, name):
        """A text feature; absent or null gives None."""
        value = self.get(name)
        if value is None or isinstance(value, Value_Null):
            return None
        if isinstance(value, Value_Text):
            return value.value
        raise invalid_input(f"feature `{name}` must be text")


class Params:
    """The tier's params from its cascade entry (nested tables flattened with dots)."""

    def __init__(self):
        self._params = {p.name: p.value for p in reversed(host.params())}

    def get(self, name):
        return self._params.get(name)

    def number_or(self, name, default):
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, (Value_Integer, Value_Float)):
            return float(value.value) if isinstance(value, Value_Integer) else value.value
        raise bad_params(f"param `{name}` must be a number")

    def text_or(self, name, default):
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, Value_Text):
            return value.value
        raise bad_params(f"param `{name}` must be text")
