"""What the OPC UA nodes show and what its methods do, mapped onto the PLC handshake.

Kept apart from the server's thread and loop so it reads as the protocol mapping it is:
:func:`station_values` / :func:`result_values` turn the handshake's state into node values,
:class:`StationMethods` answers ``Trigger`` and ``SelectRecipe``. Bad calls get the standard
OPC UA status (a missing, extra or mistyped argument); a call the station refuses (not Ready,
an unknown recipe, a name too long to be one) answers ``Ok = false`` with the reason.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from asyncua import ua

from station.plant.handshake import PlcHandshake, PlcResult
from station.plant.host import RecipeEntry

log = logging.getLogger(__name__)

MAX_RECIPE_KEY = 200  # characters: longer is no recipe name (file stems are far shorter)
UINT16, UINT32 = 0xFFFF, 0xFFFFFFFF
INTEGER_TYPES = frozenset({
    ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16, ua.VariantType.UInt16,
    ua.VariantType.Int32, ua.VariantType.UInt32, ua.VariantType.Int64, ua.VariantType.UInt64})


def _score(value: float | None) -> float:
    return math.nan if value is None else float(value)


def result_values(result: PlcResult) -> dict[str, Any]:
    """The ``Result.*`` variables of one presented result."""
    return {
        "Result.Sequence": min(result.seq, UINT32),
        "Result.PartId": result.part_id,
        "Result.Verdict": result.verdict,
        "Result.ResultCode": result.code,
        "Result.AutoencoderScore": _score(result.ae_score),
        "Result.ClassifierScore": _score(result.cls_score),
        "Result.Reason": result.reason,
        "Result.Time": datetime.fromtimestamp(result.time, UTC),
        "Result.LatencyMs": float(result.latency_ms),
        "Result.ModelVersions": [f"{k}={v}" for k, v in sorted(result.model_versions.items())],
    }


def station_values(handshake: PlcHandshake, catalogue: Sequence[RecipeEntry]
                   ) -> dict[str, Any]:
    """Every variable but the result's and ResultValid, as the handshake has them now."""
    state, why = handshake.state_and_why()
    counts = dict(handshake.counts)
    return {
        "State": state.name.capitalize(),
        "StateCode": int(state),
        "StateReason": why,
        "RecipeInUse.Name": handshake.recipe_name,
        "RecipeInUse.Number": min(max(handshake.recipe_number, 0), UINT16),
        "Recipes.Names": [e.name for e in catalogue],
        "Recipes.Numbers": [min(max(e.number, 0), UINT16) for e in catalogue],
        "Counts.Inspected": min(counts.get("inspected", 0), UINT32),
        "Counts.Passed": min(counts.get("passed", 0), UINT32),
        "Counts.Rejected": min(counts.get("rejected", 0), UINT32),
        "Counts.Errors": min(counts.get("errors", 0), UINT32),
        "ActiveAlarms": [f"{kind}: {message}" for kind, message in handshake.alarms()],
        "Heartbeat": handshake.heartbeat & UINT16,
        "Reject": handshake.reject_pulse,
    }


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))


def _mistyped(index: int, count: int) -> ua.CallMethodResult:
    """BadInvalidArgument, naming the argument at fault (BadTypeMismatch)."""
    res = ua.CallMethodResult()
    res.StatusCode = _status(ua.StatusCodes.BadInvalidArgument)
    res.InputArgumentResults = [_status(ua.StatusCodes.BadTypeMismatch if i == index
                                        else ua.StatusCodes.Good) for i in range(count)]
    return res


def _arity(args: tuple[Any, ...], expected: int) -> ua.StatusCode | None:
    if len(args) < expected:
        return _status(ua.StatusCodes.BadArgumentsMissing)
    if len(args) > expected:
        return _status(ua.StatusCodes.BadTooManyArguments)
    return None


def _answer(*values: tuple[Any, ua.VariantType]) -> list[ua.Variant]:
    return [ua.Variant(value, vtype) for value, vtype in values]


class StationMethods:
    """The handlers asyncua calls (in its worker threads) for ``Trigger`` and
    ``SelectRecipe``; each returns output variants or a status, never raises."""

    def __init__(self, handshake: PlcHandshake) -> None:
        self.handshake = handshake

    def handlers(self) -> dict[str, Any]:
        return {"Trigger": self.trigger, "SelectRecipe": self.select_recipe}

    def trigger(self, _parent: ua.NodeId, *args: ua.Variant) -> Any:
        """``Trigger() -> (Ok, PartId, Reason)``."""
        bad = _arity(args, 0)
        if bad is not None:
            return bad
        try:
            ok, what = self.handshake.trigger()
        except Exception as exc:  # the station keeps serving; the PLC reads why
            log.exception("OPC UA Trigger failed")
            ok, what = False, f"trigger failed: {type(exc).__name__}: {exc}"
        return _answer((ok, ua.VariantType.Boolean), (what if ok else "", ua.VariantType.String),
                       ("" if ok else what, ua.VariantType.String))

    def select_recipe(self, _parent: ua.NodeId, *args: ua.Variant) -> Any:
        """``SelectRecipe(Recipe) -> (Ok, Reason)``: a name (String) or a number (integer)."""
        bad = _arity(args, 1)
        if bad is not None:
            return bad
        arg = args[0]
        if not isinstance(arg, ua.Variant) or arg.is_array:
            return _mistyped(0, 1)
        key: str | int
        if arg.VariantType == ua.VariantType.String and isinstance(arg.Value, str):
            if len(arg.Value) > MAX_RECIPE_KEY:
                return self._refuse(f"Recipe: {len(arg.Value)} characters: expected a recipe "
                                    f"name or number (at most {MAX_RECIPE_KEY} characters)")
            if not arg.Value.strip():
                return self._refuse("Recipe: empty: expected a recipe name or number")
            key = arg.Value
        elif arg.VariantType in INTEGER_TYPES and isinstance(arg.Value, int):
            key = int(arg.Value)
        else:
            return _mistyped(0, 1)
        try:
            ok, reason = self.handshake.select_recipe(key)
        except Exception as exc:
            log.exception("OPC UA SelectRecipe(%r) failed", key)
            ok, reason = False, f"changeover failed: {type(exc).__name__}: {exc}"
        return _answer((ok, ua.VariantType.Boolean), (reason, ua.VariantType.String))

    @staticmethod
    def _refuse(reason: str) -> list[ua.Variant]:
        log.info("OPC UA SelectRecipe refused: %s", reason)
        return _answer((False, ua.VariantType.Boolean), (reason, ua.VariantType.String))
