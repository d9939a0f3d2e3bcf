"""Structural rules of the core package, read from its source.

- The core never imports a concrete cloud provider (``cloudnn_*``): providers
  plug in through entry points, as a third party's would.
- The core names the local backend only in the registry's table: the Client,
  endpoints and CLI reach it through the provider SPI like any cloud.
- No import cycles between cloudnn modules, counting imports inside
  functions too (a cycle deferred into a function is still a cycle).
- torch is imported only under cloudnn.runtime and cloudnn.local.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "cloudnn"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    """(imported module, line) for every import outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(), str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.append((base, node.lineno))
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target, _ in _imports(path, name):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                edges.add(target)
        graph[name] = edges
    return graph


def test_the_core_never_imports_a_provider_package() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{line} imports {target}"
        for name, path in _modules().items()
        for target, line in _imports(path, name)
        if re.match(r"cloudnn_\w+", target)
    ]
    assert not offenders, offenders


def test_client_endpoints_and_cli_do_not_name_the_local_backend() -> None:
    files = [PACKAGE / "client.py", PACKAGE / "endpoints.py"]
    files += sorted((PACKAGE / "cli").glob("*.py"))
    pattern = re.compile(r'LocalProvider|cloudnn\.local|== "local"')
    offenders = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, offenders


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    # a package's __init__ re-exporting its submodules is not a cycle of design
    real = [
        c
        for c in cycles
        if not all(c[0].startswith(m) or m.startswith(c[0]) for m in c)
    ]
    assert not real, "\n".join(" -> ".join(c) for c in real)


def test_torch_only_in_runtime_and_local() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{line}"
        for name, path in _modules().items()
        if not name.startswith(("cloudnn.runtime", "cloudnn.local"))
        for target, line in _imports(path, name)
        if target == "torch" or target.startswith("torch.")
    ]
    assert not offenders, offenders
