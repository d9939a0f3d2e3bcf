"""Offline validation of Vertex AI requests, without importing the vendor SDK.

``cloudnn plan --provider gcp`` must be fast and work with nothing but the
core installed, yet check its payloads against Vertex AI's own schema. So
the schema is *extracted* once from the installed ``aiplatform_v1`` messages
into ``data/vertex_schema.json`` (``python -m cloudnn_gcp.schema`` rewrites
it; a test fails when it no longer matches the installed SDK), and
:func:`validate` walks a request against that data:

* unknown fields, wrong JSON types, bad enum names, two members of a oneof;
* fields the API marks ``Required.`` left unset, and ``Output only.``
  fields set by the client -- proto descriptors drop those annotations, so
  they are read from the generated classes' docstrings, the same text the
  API reference is made of.

Requests are proto3 JSON with snake_case names (what
``google.protobuf.json_format.ParseDict`` and ``Message.from_json``
accept): enums by name, ``Duration`` as ``"3600s"``, 64-bit integers as
numbers or strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

from cloudnn.errors import SpecError

__all__ = ["ROOTS", "extract_schema", "schema", "validate", "violations"]

#: the requests cloudnn sends, by their proto message name
ROOTS = (
    "google.cloud.aiplatform.v1.CreateCustomJobRequest",
    "google.cloud.aiplatform.v1.UploadModelRequest",
    "google.cloud.aiplatform.v1.CreateEndpointRequest",
    "google.cloud.aiplatform.v1.DeployModelRequest",
)
_DATA = "data/vertex_schema.json"

#: JSON forms of the well-known types (proto3 JSON mapping)
_WELL_KNOWN = {
    "google.protobuf.Duration": "duration",
    "google.protobuf.Timestamp": "timestamp",
    "google.protobuf.FieldMask": "string",
    "google.protobuf.Struct": "object",
    "google.protobuf.Value": "any",
    "google.protobuf.ListValue": "array",
    "google.protobuf.Any": "object",
    "google.protobuf.Empty": "object",
    "google.protobuf.BoolValue": "bool",
    "google.protobuf.StringValue": "string",
    "google.protobuf.Int32Value": "int",
    "google.protobuf.Int64Value": "int",
    "google.protobuf.UInt32Value": "int",
    "google.protobuf.UInt64Value": "int",
    "google.protobuf.FloatValue": "number",
    "google.protobuf.DoubleValue": "number",
    "google.protobuf.BytesValue": "string",
}
_DURATION = re.compile(r"^-?\d+(\.\d{1,9})?s$")
_TIMESTAMP = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$"
)
_FIELD_DOC = re.compile(
    r"^        ([a-z_][a-z0-9_]*) \(.*?\):\n((?:            .*\n|\s*\n)*)", re.M
)
_MARKERS = ("Required.", "Output only.", "Optional.", "Immutable.", "Input only.")


# ----------------------------------------------------------------- extraction


def _behaviour(doc: str) -> dict[str, str]:
    """field name -> "required" | "output_only", from a proto-plus docstring."""
    out: dict[str, str] = {}
    for match in _FIELD_DOC.finditer(doc + "\n"):
        words = " ".join(match.group(2).split())
        found = set()
        while True:
            for marker in _MARKERS:
                if words.startswith(marker):
                    found.add(marker)
                    words = words[len(marker) :].lstrip()
                    break
            else:
                break
        if "Required." in found:
            out[match.group(1)] = "required"
        elif "Output only." in found:
            out[match.group(1)] = "output_only"
    return out


def _proto_plus_classes() -> dict[str, Any]:
    """Full proto name -> proto-plus class, for aiplatform_v1's types."""
    from google.cloud.aiplatform_v1 import types

    found: dict[str, Any] = {}

    def visit(cls: Any) -> None:
        meta = getattr(cls, "meta", None)
        pb = getattr(meta, "pb", None)
        descriptor = getattr(pb, "DESCRIPTOR", None)
        if descriptor is None or descriptor.full_name in found:
            return
        found[descriptor.full_name] = cls
        for value in vars(cls).values():
            if isinstance(value, type):
                visit(value)

    for name in dir(types):
        value = getattr(types, name)
        if isinstance(value, type):
            visit(value)
    return found


def extract_schema() -> dict[str, Any]:
    """The schema of :data:`ROOTS` and everything they reach, from the installed SDK.

    ``{"messages": {name: {field: {...}}}, "enums": {name: [values]}, "sdk": version}``.
    """
    from google.cloud import aiplatform_v1
    from google.protobuf import descriptor as d

    classes = _proto_plus_classes()
    messages: dict[str, dict[str, Any]] = {}
    enums: dict[str, list[str]] = {}

    def visit(desc: d.Descriptor) -> None:
        if desc.full_name in messages or desc.full_name in _WELL_KNOWN:
            return
        cls = classes.get(desc.full_name)
        behaviour = _behaviour(cls.__doc__ or "") if cls is not None else {}
        fields: dict[str, Any] = {}
        messages[desc.full_name] = fields
        for f in desc.fields:
            entry: dict[str, Any] = {}
            if f.message_type is not None and f.message_type.GetOptions().map_entry:
                key, value = f.message_type.fields
                entry["map"] = [_kind(key), _kind(value)]
                for part in (value,):
                    if part.message_type is not None:
                        visit(part.message_type)
                    if part.enum_type is not None:
                        _enum(part.enum_type)
            else:
                entry["type"] = _kind(f)
                if _is_repeated(f):
                    entry["repeated"] = True
                if f.message_type is not None:
                    visit(f.message_type)
                if f.enum_type is not None:
                    _enum(f.enum_type)
            oneof = f.containing_oneof
            if oneof is not None and not _synthetic(oneof):
                entry["oneof"] = oneof.name
            if f.name in behaviour:
                entry[behaviour[f.name]] = True
            fields[f.name] = entry

    def _enum(desc: d.EnumDescriptor) -> None:
        enums.setdefault(desc.full_name, [v.name for v in desc.values])

    for root in ROOTS:
        short = root.rsplit(".", 1)[1]
        cls = getattr(aiplatform_v1, short)
        visit(cls.meta.pb.DESCRIPTOR)
    return {
        "sdk": getattr(aiplatform_v1, "__version__", ""),
        "roots": list(ROOTS),
        "messages": {k: messages[k] for k in sorted(messages)},
        "enums": {k: enums[k] for k in sorted(enums)},
    }


def _is_repeated(f: Any) -> bool:
    repeated = getattr(f, "is_repeated", None)
    if isinstance(repeated, bool):
        return repeated
    return bool(f.label == f.LABEL_REPEATED)


def _synthetic(oneof: Any) -> bool:
    # proto3 `optional` makes a one-member oneof named "_<field>"
    return len(oneof.fields) == 1 and oneof.name.startswith("_")


def _kind(f: Any) -> str:
    if f.message_type is not None:
        name = str(f.message_type.full_name)
        return _WELL_KNOWN.get(name, f"message:{name}")
    if f.enum_type is not None:
        return f"enum:{f.enum_type.full_name}"
    t = f.type
    if t in (f.TYPE_STRING,):
        return "string"
    if t == f.TYPE_BYTES:
        return "bytes"
    if t == f.TYPE_BOOL:
        return "bool"
    if t in (f.TYPE_FLOAT, f.TYPE_DOUBLE):
        return "number"
    if t in (
        f.TYPE_INT64,
        f.TYPE_UINT64,
        f.TYPE_SINT64,
        f.TYPE_FIXED64,
        f.TYPE_SFIXED64,
    ):
        return "int64"
    return "int"


# ----------------------------------------------------------------- validation


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The bundled schema (``data/vertex_schema.json``)."""
    text = resources.files("cloudnn_gcp").joinpath(_DATA).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _type_name(message: str) -> str:
    return message.rsplit(".", 1)[-1]


def violations(message: str, value: Any, path: str = "") -> list[str]:
    """Every problem of ``value`` as proto JSON of ``message`` (empty: valid)."""
    data = schema()
    out: list[str] = []
    _check_message(data, message, value, path, out)
    return out


def validate(message: str, value: Mapping[str, Any], *, what: str = "") -> None:
    """Raise :class:`SpecError` for the first problem of ``value`` (see :func:`violations`)."""
    found = violations(message, value)
    if found:
        head = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        field_path, _, reason = head.partition(": ")
        raise SpecError(
            field_path or what or _type_name(message),
            f"{reason}{more}, in the {what or _type_name(message)} request",
            hint="this is a cloudnn bug if the spec is valid; report it with "
            "`cloudnn plan --json` output",
        )


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _present(value: Any) -> bool:
    """proto3 JSON: a default value is the same as no value."""
    return value not in (None, "", 0, False, [], {})


def _check_message(
    data: Mapping[str, Any], message: str, value: Any, path: str, out: list[str]
) -> None:
    fields: Mapping[str, Any] | None = data["messages"].get(message)
    if fields is None:
        out.append(f"{path or '<root>'}: no schema for {message}")
        return
    if not isinstance(value, Mapping):
        out.append(f"{path or '<root>'}: expected an object ({_type_name(message)})")
        return
    by_json = {_camel(name): name for name in fields}
    oneofs: dict[str, str] = {}
    for key, item in value.items():
        name = key if key in fields else by_json.get(key)
        where = _join(path, key)
        if name is None:
            close = ", ".join(sorted(fields))
            out.append(
                f"{where}: unknown field of {_type_name(message)} (fields: {close})"
            )
            continue
        spec = fields[name]
        if spec.get("output_only") and _present(item):
            out.append(f"{where}: output only, but set by the client")
        group = spec.get("oneof")
        if group and item is not None:
            if group in oneofs:
                out.append(
                    f"{where}: oneof {group!r} already has {oneofs[group]!r}; set one"
                )
            oneofs[group] = name
        _check_field(data, spec, item, where, out)
    for name, spec in fields.items():
        if not spec.get("required"):
            continue
        item = value.get(name, value.get(_camel(name)))
        if not _present(item):
            out.append(f"{_join(path, name)}: required but unset")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _check_field(
    data: Mapping[str, Any],
    spec: Mapping[str, Any],
    value: Any,
    path: str,
    out: list[str],
) -> None:
    if value is None:
        return
    if "map" in spec:
        key_kind, value_kind = spec["map"]
        if not isinstance(value, Mapping):
            out.append(f"{path}: expected an object (map)")
            return
        for k, v in value.items():
            if key_kind != "string" and not re.fullmatch(r"-?\d+", str(k)):
                out.append(f"{path}.{k}: map key must be an integer")
            _check_value(data, value_kind, v, f"{path}.{k}", out)
        return
    if spec.get("repeated"):
        if not isinstance(value, list):
            out.append(f"{path}: expected a list")
            return
        for i, item in enumerate(value):
            _check_value(data, spec["type"], item, f"{path}[{i}]", out)
        return
    _check_value(data, spec["type"], value, path, out)


def _check_value(
    data: Mapping[str, Any], kind: str, value: Any, path: str, out: list[str]
) -> None:
    if kind.startswith("message:"):
        _check_message(data, kind[len("message:") :], value, path, out)
    elif kind.startswith("enum:"):
        values = data["enums"][kind[len("enum:") :]]
        if isinstance(value, bool) or not (
            (isinstance(value, str) and value in values)
            or (isinstance(value, int) and 0 <= value < 1 << 31)
        ):
            shown = ", ".join(v for v in values if not v.endswith("_UNSPECIFIED"))
            out.append(f"{path}: {value!r} is not one of {shown}")
    elif kind == "string":
        if not isinstance(value, str):
            out.append(f"{path}: expected a string, got {type(value).__name__}")
    elif kind == "bytes":
        if not isinstance(value, str):
            out.append(f"{path}: expected base64 text")
    elif kind == "bool":
        if not isinstance(value, bool):
            out.append(f"{path}: expected true or false, got {value!r}")
    elif kind in ("int", "int64"):
        ok = isinstance(value, int) and not isinstance(value, bool)
        if kind == "int64" and isinstance(value, str):
            ok = bool(re.fullmatch(r"-?\d+", value))
        if not ok:
            out.append(f"{path}: expected an integer, got {value!r}")
        elif kind == "int" and not -(1 << 31) <= int(value) < 1 << 32:
            out.append(f"{path}: {value} does not fit 32 bits")
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            out.append(f"{path}: expected a number, got {value!r}")
    elif kind == "duration":
        if not (isinstance(value, str) and _DURATION.match(value)):
            out.append(f"{path}: expected a duration such as '3600s', got {value!r}")
    elif kind == "timestamp":
        if not (isinstance(value, str) and _TIMESTAMP.match(value)):
            out.append(f"{path}: expected an RFC 3339 timestamp, got {value!r}")
    elif kind == "object":
        if not isinstance(value, Mapping):
            out.append(f"{path}: expected an object")
    elif kind == "array" and not isinstance(value, list):
        out.append(f"{path}: expected a list")
    # "any" (google.protobuf.Value): every JSON value fits


def _write() -> None:  # pragma: no cover - maintenance entry point
    from pathlib import Path

    target = Path(__file__).resolve().parent / _DATA
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(extract_schema(), indent=1, sort_keys=True) + "\n"
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target} ({len(text):,} bytes)")


if __name__ == "__main__":  # python -m cloudnn_gcp.schema
    _write()
