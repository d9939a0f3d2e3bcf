"""Offline validation of request payloads against botocore's own service models.

``cloudnn plan --provider aws`` must be fast and must not import botocore
(loading the SageMaker service model alone costs ~0.5 s), so the input shapes
of the few operations cloudnn sends are extracted from the installed botocore
into ``data/service_schema.json`` (``python -m cloudnn_aws._schema`` rewrites
it; a test fails when the installed botocore disagrees with the file).

:func:`validate` checks what botocore's ``ParamValidator`` checks -- required
members, unknown members, types, ``min``/``max`` -- and also what botocore
deliberately skips and the service only rejects after the call: ``pattern``
(the names, ARNs and S3 URIs) and ``enum`` (instance types, input modes).
AWS patterns are Java regular expressions matched against the whole value;
the few Java-only classes (``\\p{L}``, surrogate ranges) are translated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = [
    "OPERATIONS",
    "Problem",
    "enum_values",
    "extract",
    "load_schema",
    "validate",
]

#: every operation whose request cloudnn builds, per botocore service name
OPERATIONS: dict[str, tuple[str, ...]] = {
    "sagemaker": (
        "CreateTrainingJob",
        "CreateModel",
        "CreateEndpointConfig",
        "CreateEndpoint",
    ),
    "application-autoscaling": ("RegisterScalableTarget", "PutScalingPolicy"),
}

_DATA_FILE = "service_schema.json"

# Java regex classes -> Python character-class contents
_JAVA_CLASSES = {
    "L": "a-zA-Z\\u00aa-\\ud7ff\\uf900-\\uffdc",
    "N": "0-9\\u00b2\\u00b3\\u00b9\\u0660-\\u0669\\u2070-\\u2089",
    "Z": " \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000",
    "Alnum": "a-zA-Z0-9",
    "Print": "\\x20-\\x7e",
}
# UTF-16 surrogate pairs written as ranges: astral characters in Python
_SURROGATES = "\\uD800\\uDC00-\\uDBFF\\uDFFF"


@dataclass(frozen=True)
class Problem:
    """One reason a payload would be rejected: where (``a.b[0].c``) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


# ------------------------------------------------------------------ extraction


def _shape_entry(shape: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": shape.type_name}
    meta = shape.metadata
    for key in ("min", "max", "pattern"):
        if key in meta:
            entry[key] = meta[key]
    if getattr(shape, "enum", None):
        entry["enum"] = list(shape.enum)
    if shape.type_name == "structure":
        entry["members"] = {name: m.name for name, m in shape.members.items()}
        entry["required"] = list(meta.get("required", []))
    elif shape.type_name == "list":
        entry["member"] = shape.member.name
    elif shape.type_name == "map":
        entry["key"] = shape.key.name
        entry["value"] = shape.value.name
    return entry


def extract(operations: Mapping[str, tuple[str, ...]] = OPERATIONS) -> dict[str, Any]:
    """The input shapes of ``operations`` from the installed botocore, as data."""
    import botocore
    import botocore.session

    session = botocore.session.get_session()
    services: dict[str, Any] = {}
    for service, ops in operations.items():
        model = session.get_service_model(service)
        shapes: dict[str, Any] = {}

        def walk(shape: Any, shapes: dict[str, Any] = shapes) -> None:
            if shape.name in shapes:
                return
            shapes[shape.name] = _shape_entry(shape)
            if shape.type_name == "structure":
                for member in shape.members.values():
                    walk(member)
            elif shape.type_name == "list":
                walk(shape.member)
            elif shape.type_name == "map":
                walk(shape.key)
                walk(shape.value)

        inputs: dict[str, str] = {}
        for op in ops:
            input_shape = model.operation_model(op).input_shape
            inputs[op] = input_shape.name
            walk(input_shape)
        services[service] = {
            "api_version": model.api_version,
            "operations": inputs,
            "shapes": dict(sorted(shapes.items())),
        }
    return {"botocore_version": botocore.__version__, "services": services}


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The extracted schema shipped with this package."""
    text = (
        resources.files("cloudnn_aws")
        .joinpath(f"data/{_DATA_FILE}")
        .read_text(encoding="utf-8")
    )
    data: dict[str, Any] = json.loads(text)
    return data


def enum_values(service: str, shape: str) -> tuple[str, ...]:
    """The allowed values of enum ``shape`` (e.g. ``TrainingInstanceType``)."""
    entry = load_schema()["services"][service]["shapes"][shape]
    return tuple(entry.get("enum", ()))


# ------------------------------------------------------------------ validation


def _translate(pattern: str) -> str:
    """A Java regex in Python syntax (``\\p{..}`` classes, surrogate ranges)."""
    text = pattern.replace(_SURROGATES, "\\U00010000-\\U0010ffff")
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and text.startswith("\\p{", i):
            end = text.index("}", i)
            inner = _JAVA_CLASSES[text[i + 3 : end]]
            out.append(inner if in_class else f"[{inner}]")
            i = end + 1
            continue
        if ch == "\\":
            out.append(text[i : i + 2])
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
        elif ch == "]" and in_class:
            in_class = False
        out.append(ch)
        i += 1
    return "".join(out)


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(_translate(pattern), re.DOTALL)
    except (re.error, KeyError, ValueError):
        return None  # a construct we cannot translate: the service checks it


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "long": (int,),
    "float": (int, float),
    "double": (int, float),
    "boolean": (bool,),
    "blob": (bytes, bytearray, str),
    "timestamp": (str, int, float),
    "list": (list, tuple),
    "map": (dict,),
    "structure": (dict,),
}


def validate(service: str, operation: str, params: Mapping[str, Any]) -> list[Problem]:
    """Every problem with ``params`` as the input of ``service``.``operation``."""
    schema = load_schema()["services"][service]
    shapes: dict[str, Any] = schema["shapes"]
    problems: list[Problem] = []

    def check(given: Any, name: str, path: str) -> None:
        shape = shapes[name]
        kind = shape["type"]
        allowed = _TYPES.get(kind, (object,))
        value: Any = given
        if (kind != "boolean" and isinstance(given, bool)) or not isinstance(
            given, allowed
        ):
            problems.append(
                Problem(path, f"expected {kind}, got {type(value).__name__}")
            )
            return
        if kind == "structure":
            for key in shape.get("required", []):
                if key not in value:
                    problems.append(Problem(_join(path, key), "required but missing"))
            for key, item in value.items():
                member = shape["members"].get(key)
                if member is None:
                    known = ", ".join(sorted(shape["members"]))
                    problems.append(
                        Problem(_join(path, key), f"unknown member (known: {known})")
                    )
                    continue
                check(item, member, _join(path, key))
            return
        if kind in ("list", "map", "string", "blob"):
            size = len(value)
            what = "characters" if kind == "string" else "items"
            if "min" in shape and size < shape["min"]:
                problems.append(
                    Problem(path, f"has {size} {what}, at least {shape['min']} needed")
                )
            if "max" in shape and size > shape["max"]:
                problems.append(
                    Problem(path, f"has {size} {what}, at most {shape['max']} allowed")
                )
        if kind in ("integer", "long", "float", "double"):
            if "min" in shape and value < shape["min"]:
                problems.append(Problem(path, f"{value} is below {shape['min']}"))
            if "max" in shape and value > shape["max"]:
                problems.append(Problem(path, f"{value} is above {shape['max']}"))
        if kind == "list":
            for i, item in enumerate(value):
                check(item, shape["member"], f"{path}[{i}]")
        elif kind == "map":
            for key, item in value.items():
                check(key, shape["key"], f"{path}.{key}(key)")
                check(item, shape["value"], _join(path, str(key)))
        elif kind == "string":
            enum = shape.get("enum")
            if enum and value not in enum:
                problems.append(
                    Problem(path, f"{value!r} is not one of {_few(enum, value)}")
                )
            pattern = shape.get("pattern")
            if pattern and _is_placeholder(value) is False:
                compiled = _compile(pattern)
                if compiled is not None and not compiled.fullmatch(value):
                    problems.append(
                        Problem(path, f"{value!r} does not match {pattern}")
                    )

    check(dict(params), schema["operations"][operation], "")
    return problems


#: values a plan shows for settings the user has not given yet (see compile.py)
PLACEHOLDER_PREFIX = "<unset:"


def _is_placeholder(value: str) -> bool:
    return PLACEHOLDER_PREFIX in value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _few(values: list[str], near: str, n: int = 6) -> str:
    import difflib

    close = difflib.get_close_matches(near, values, n=n, cutoff=0.6)
    shown = close or values[:n]
    more = f" (and {len(values) - len(shown)} more)" if len(values) > len(shown) else ""
    return ", ".join(shown) + more


def main() -> None:
    """``python -m cloudnn_aws._schema``: rewrite the data file from botocore."""
    from pathlib import Path

    target = Path(__file__).with_name("data") / _DATA_FILE
    target.write_text(json.dumps(extract(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
