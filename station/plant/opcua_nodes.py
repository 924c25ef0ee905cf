"""The OPC UA address space of the station: one table, the builder, and its documentation.

``LAYOUT`` is the single description of every node a PLC or MES client sees (browse name, data
type, access, meaning); the server builds its address space from it and ``docs/opcua.md``
shows the same table (:func:`layout_markdown`, checked by a test), so the two cannot drift.

Node ids are strings in the station's namespace (``NAMESPACE``): ``ns=<i>;s=Station.Result.PartId``,
so a PLC can configure them statically; resolve ``<i>`` from the namespace URI (it is 2 on a
station that registers nothing else).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asyncua import Server, ua
from asyncua.common.node import Node

NAMESPACE = "urn:station:opcua"
ROOT = "Station"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REJECT_PATH = "Reject"  # present only while the recipe's reject output is the PLC


@dataclass(frozen=True)
class Arg:
    """One input or output argument of a method."""

    name: str
    type: str  # a ua.ObjectIds name: String, Boolean, BaseDataType, ...
    doc: str


@dataclass(frozen=True)
class NodeSpec:
    """One node below ``Station``: ``path`` is dotted (``Result.PartId``); ``type`` a
    ``ua.VariantType`` name for a variable, "Object" or "Method"."""

    path: str
    type: str
    doc: str
    array: bool = False
    writable: bool = False
    inputs: tuple[Arg, ...] = ()
    outputs: tuple[Arg, ...] = ()

    @property
    def kind(self) -> str:
        return self.type if self.type in ("Object", "Method") else "Variable"

    @property
    def name(self) -> str:
        return self.path.rpartition(".")[2]


_OK = Arg("Ok", "Boolean", "true = done")
_REASON = Arg("Reason", "String", "what was done, or why not, in one line")

LAYOUT: tuple[NodeSpec, ...] = (
    NodeSpec("State", "String", "Idle, Ready, Busy or Error (OPC 40100 in spirit): Ready = a "
             "Trigger is accepted now"),
    NodeSpec("StateCode", "UInt16", "State as a number: 0 Idle, 1 Ready, 2 Busy, 3 Error"),
    NodeSpec("StateReason", "String", "why the state is not Ready ('' when it is)"),
    NodeSpec("RecipeInUse", "Object", "the recipe the line runs"),
    NodeSpec("RecipeInUse.Name", "String", "its name (the recipe file's stem)"),
    NodeSpec("RecipeInUse.Number", "UInt16", "its number ([product] number, or its position "
             "in the sorted recipe folder)"),
    NodeSpec("Recipes", "Object", "the recipes a PLC can select (the running recipe's folder)"),
    NodeSpec("Recipes.Names", "String", "their names", array=True),
    NodeSpec("Recipes.Numbers", "UInt16", "their numbers, in the same order", array=True),
    NodeSpec("SelectRecipe", "Method", "change over to a recipe, as the window does: refused "
             "while a PLC-triggered part is in flight, for an unknown recipe or a refused one "
             "(the old recipe keeps running); returns when the new recipe runs",
             inputs=(Arg("Recipe", "BaseDataType", "a name (String) or a number (any integer "
                         "type)"),), outputs=(_OK, _REASON)),
    NodeSpec("Trigger", "Method", "inspect the part in front of the camera now (trigger.mode "
             "= \"plc\"); refused unless Ready", outputs=(
                 _OK, Arg("PartId", "String", "the new part's id ('' when refused)"),
                 Arg("Reason", "String", "why not ('' when Ok)"))),
    NodeSpec("Result", "Object", "the last result presented to the PLC (kept after it is "
             "acknowledged)"),
    NodeSpec("Result.Sequence", "UInt32", "1, 2, ... per station run: tells results apart"),
    NodeSpec("Result.PartId", "String", "the part's id"),
    NodeSpec("Result.Verdict", "String", "PASS, REJECT or ERROR"),
    NodeSpec("Result.ResultCode", "UInt16", "1 pass, 2 reject, 3 error (0 = none yet)"),
    NodeSpec("Result.AutoencoderScore", "Double", "normalized anomaly score, 1.0 = threshold "
             "(NaN = no such model or no score)"),
    NodeSpec("Result.ClassifierScore", "Double", "normalized defect score, 1.0 = threshold "
             "(NaN = no such model or no score)"),
    NodeSpec("Result.Reason", "String", "why the part got its verdict, in one line"),
    NodeSpec("Result.Time", "DateTime", "when the verdict was latched (UTC)"),
    NodeSpec("Result.LatencyMs", "Double", "trigger to verdict, milliseconds"),
    NodeSpec("Result.ModelVersions", "String", "'autoencoder=<version>', "
             "'classifier=<version>'", array=True),
    NodeSpec("ResultValid", "Boolean", "true while a result not yet acknowledged is presented "
             "in Result"),
    NodeSpec("ResultAck", "Boolean", "write true to acknowledge the presented result; the "
             "station sets it back to false and presents the next one at once (if one waits: "
             "compare Sequence). true with no result presented: BadInvalidState",
             writable=True),
    NodeSpec("Counts", "Object", "this shift's counts"),
    NodeSpec("Counts.Inspected", "UInt32", "parts inspected"),
    NodeSpec("Counts.Passed", "UInt32", "parts passed"),
    NodeSpec("Counts.Rejected", "UInt32", "parts rejected"),
    NodeSpec("Counts.Errors", "UInt32", "parts with an ERROR verdict"),
    NodeSpec("ActiveAlarms", "String", "the alarms whose condition holds: 'kind: message'",
             array=True),
    NodeSpec("Heartbeat", "UInt16", "counts seconds (mod 65536) while the station answers"),
    NodeSpec(REJECT_PATH, "Boolean", "the reject output, held reject.pulse_ms at the part's "
             "reject point; only while the recipe has reject.output = \"plc\""),
)

SPECS = {spec.path: spec for spec in LAYOUT}


def node_id(idx: int, path: str) -> ua.NodeId:
    """The string node id of ``Station.<path>`` (``ROOT`` itself for "")."""
    return ua.NodeId(ua.String(f"{ROOT}.{path}" if path else ROOT), ua.Int16(idx))


def variant(spec: NodeSpec, value: Any) -> ua.Variant:
    """``value`` as the variable's declared type (arrays as lists)."""
    vtype = ua.VariantType[spec.type]
    if spec.array:
        return ua.Variant(list(value), vtype, Dimensions=[ua.Int32(len(value))])
    return ua.Variant(value, vtype)


def initial(spec: NodeSpec) -> Any:
    """The value a variable holds before the station sets it."""
    if spec.array:
        return []
    return {"String": "", "Boolean": False, "Double": math.nan, "DateTime": EPOCH}.get(
        spec.type, 0)


def _argument(arg: Arg) -> ua.Argument:
    return ua.Argument(Name=arg.name, DataType=ua.NodeId(getattr(ua.ObjectIds, arg.type)),
                       ValueRank=ua.ValueRank.Scalar, Description=ua.LocalizedText(arg.doc))


MethodHandler = Callable[..., Any]


async def add_node(server: Server, idx: int, spec: NodeSpec,
                   methods: dict[str, MethodHandler]) -> Node:
    """Create one node of the layout under its parent (which must exist)."""
    parent_path = spec.path.rpartition(".")[0]
    parent = server.get_node(node_id(idx, parent_path))
    nid, qname = node_id(idx, spec.path), ua.QualifiedName(spec.name, idx)
    if spec.kind == "Object":
        node = await parent.add_object(nid, qname)
    elif spec.kind == "Method":
        node = await parent.add_method(nid, qname, methods[spec.path],
                                       [_argument(a) for a in spec.inputs],
                                       [_argument(a) for a in spec.outputs])
    else:
        datatype = ua.NodeId(getattr(ua.ObjectIds, spec.type))
        node = await parent.add_variable(nid, qname, variant(spec, initial(spec)),
                                         datatype=datatype)
        if spec.array:
            await node.write_attribute(ua.AttributeIds.ValueRank, ua.DataValue(
                ua.Variant(ua.ValueRank.OneDimension, ua.VariantType.Int32)))
        if spec.writable:
            await node.set_writable()
    await node.write_attribute(ua.AttributeIds.Description, ua.DataValue(
        ua.Variant(ua.LocalizedText(spec.doc), ua.VariantType.LocalizedText)))
    return node


async def build_station(server: Server, methods: dict[str, MethodHandler], *,
                        with_reject: bool) -> int:
    """Register the namespace and build ``Objects/Station`` from ``LAYOUT``; returns the
    namespace index. ``methods`` maps a method's path to its (synchronous) handler, which
    asyncua runs in its worker threads so a changeover never stalls the server."""
    idx = await server.register_namespace(NAMESPACE)
    await server.nodes.objects.add_object(node_id(idx, ""), ua.QualifiedName(ROOT, idx))
    for spec in LAYOUT:
        if spec.path != REJECT_PATH or with_reject:
            await add_node(server, idx, spec, methods)
    return idx


def _access(spec: NodeSpec) -> str:
    if spec.kind == "Method":
        return "call"
    if spec.kind == "Object":
        return ""
    return "read/write" if spec.writable else "read"


def _type(spec: NodeSpec) -> str:
    if spec.kind == "Method":
        ins = ", ".join(f"{a.name}: {a.type}" for a in spec.inputs)
        outs = ", ".join(f"{a.name}: {a.type}" for a in spec.outputs)
        return f"({ins}) -> ({outs})"
    return spec.type + ("[]" if spec.array else "")


def layout_markdown() -> str:
    """The node table of docs/opcua.md (browse path, node id, type, access, meaning)."""
    rows = ["| Browse path | Node id (`ns=<station ns>;s=...`) | Type | Access | Meaning |",
            "|---|---|---|---|---|",
            f"| `{ROOT}` | `{ROOT}` | Object |  | the station (Objects folder) |"]
    for spec in LAYOUT:
        rows.append(f"| `{ROOT}/{spec.path.replace('.', '/')}` | `{ROOT}.{spec.path}` | "
                    f"{_type(spec)} | {_access(spec)} | {spec.doc} |")
    return "\n".join(rows) + "\n"
