"""Job bundles: what a cloud job runs and what a cloud endpoint serves.

Every provider ships the same two archives, built here:

Training bundle (``training_bundle(spec)``), a ``.tar.gz``::

    cloudnn_entry.py     the one entry point: ``python cloudnn_entry.py``
    spec.json            the spec, data paths rewritten to channel references
                         (``channel://train/digits.csv``), code paths relative
    requirements.txt     what the runtime needs beyond torch; the entry point
                         pip-installs only what the image lacks
    cloudnn/             the cloudnn runtime, as sources
    user/                the user's module folder or script ``source_dir``

Serving bundle (``serving_bundle(model_dir, platform)``)::

    <model files>        model.pt, preprocess.json, cloudnn_model.json, ...
    code/<adapter>       inference.py (sagemaker), score.py (azureml), server.py (vertex)
    code/cloudnn/        the runtime, which the adapter imports
    code/requirements.txt

Both are deterministic and content-addressed: members sorted, times,
owners and modes normalised, gzip without a timestamp; the same inputs give
byte-identical archives and the same ``sha256``, so a provider uploads a
bundle to ``.../<sha256>/...`` once and a re-submit finds it there.

Data files travel as channels, not inside the bundle: :func:`channels` says
which local file or folder backs each channel and
:func:`content_sha256` gives the content address for its upload.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cloudnn.errors import SpecError
from cloudnn.runtime.context import CHANNEL_SCHEME, channel_ref

if TYPE_CHECKING:
    from cloudnn.spec import Spec

__all__ = [
    "BUNDLE_ENTRY",
    "Bundle",
    "Channel",
    "ServingPlatform",
    "bundle_spec",
    "channels",
    "content_sha256",
    "serving_bundle",
    "training_bundle",
]

BUNDLE_ENTRY = "cloudnn_entry.py"
ServingPlatform = Literal["sagemaker", "azureml", "vertex"]
SERVING_ADAPTERS: dict[str, str] = {
    "sagemaker": "sagemaker/inference.py",
    "azureml": "azureml/score.py",
    "vertex": "vertex/server.py",
}

#: what the runtime imports beyond torch (vendor images ship torch and numpy)
RUNTIME_REQUIREMENTS = (
    ("pydantic", "pydantic>=2.6,<3"),
    ("yaml", "PyYAML>=6"),
    ("numpy", "numpy>=1.24"),
    ("matplotlib", "matplotlib>=3.7"),
)
SERVING_REQUIREMENTS = (
    ("pydantic", "pydantic>=2.6,<3"),
    ("numpy", "numpy>=1.24"),
)
#: the Vertex adapter is its own HTTP server
_HTTP_REQUIREMENTS = (("fastapi", "fastapi>=0.110"), ("uvicorn", "uvicorn>=0.29"))

#: never shipped from a user's folder
_IGNORED_DIRS = frozenset(
    {".git", ".hg", ".svn", ".venv", "venv", "__pycache__", ".mypy_cache"}
)
_IGNORED_DIRS_PREFIX = (".",)
_IGNORED_FILES = ("*.pyc", "*.pyo", ".DS_Store")
#: a user folder bigger than this is almost certainly data: refuse, say why
MAX_USER_FILE = 50 * 1024 * 1024
IGNORE_FILE = ".cloudnnignore"
_SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Bundle:
    """A built archive: its bytes, content hash and member list."""

    kind: str  # training | serving
    data: bytes
    sha256: str
    members: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.data)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the archive to ``path`` (atomically) and return the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(self.data)
        os.replace(tmp, target)
        return target


@dataclass(frozen=True)
class Channel:
    """A data split as the job sees it: a channel backed by a local file or folder."""

    name: str  # train | validation | test
    source: str  # absolute local path, or a URI used in place
    is_dir: bool
    filename: str  # the file's name inside the channel ("" for a folder)

    @property
    def is_remote(self) -> bool:
        from cloudnn.spec import is_uri

        return is_uri(self.source)

    @property
    def ref(self) -> str:
        """What the bundle's spec.json says instead of the local path."""
        return channel_ref(self.name, self.filename)


def channels(spec: Spec) -> list[Channel]:
    """The data channels of ``spec``: one per split it names, in split order."""
    from cloudnn.spec import is_uri

    out: list[Channel] = []
    for name in _SPLITS:
        value = getattr(spec.data, name)
        if not value:
            continue
        if is_uri(value):
            last = value.rstrip("/").rpartition("/")[2]
            is_dir = value.endswith("/") or "." not in last
            out.append(Channel(name, value, is_dir, "" if is_dir else last))
            continue
        path = Path(value).expanduser()
        is_dir = path.is_dir()
        out.append(Channel(name, str(path), is_dir, "" if is_dir else path.name))
    return out


# --------------------------------------------------------------- hashing


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    found = _HASH_CACHE.get(key)
    if found is None:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        found = digest.hexdigest()
        _HASH_CACHE[key] = found
    return found


def _walk(root: Path) -> Iterator[Path]:
    """Files under ``root``, sorted, skipping VCS/cache folders."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in _IGNORED_DIRS and not d.startswith(_IGNORED_DIRS_PREFIX)
        )
        for name in sorted(filenames):
            if not any(fnmatch.fnmatch(name, pat) for pat in _IGNORED_FILES):
                yield Path(dirpath) / name


def content_sha256(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(sha256, size) of a file, or of a folder's files and relative names.

    Cached per (path, size, mtime) in this process, so planning twice reads
    each file once.
    """
    p = Path(path)
    if p.is_file():
        return _file_sha256(p), p.stat().st_size
    digest = hashlib.sha256()
    total = 0
    for file in _walk(p):
        rel = file.relative_to(p).as_posix()
        digest.update(f"{rel}\0{_file_sha256(file)}\n".encode())
        total += file.stat().st_size
    return digest.hexdigest(), total


# --------------------------------------------------------------- archives


def _tar(files: Iterable[tuple[str, bytes, bool]]) -> tuple[bytes, tuple[str, ...]]:
    """A deterministic .tar.gz of ``(name, content, executable)`` members."""
    import gzip

    raw = io.BytesIO()
    members = sorted(files, key=lambda f: f[0])
    names = tuple(name for name, _, _ in members)
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate bundle members: {dupes[:5]}")
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content, executable in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o755 if executable else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(content))
    packed = io.BytesIO()
    # mtime=0 and no file name in the header: the same bytes on every machine
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return packed.getvalue(), names


def _bundle(kind: str, files: Iterable[tuple[str, bytes, bool]]) -> Bundle:
    data, names = _tar(files)
    return Bundle(kind, data, hashlib.sha256(data).hexdigest(), names)


def _package_files(prefix: str) -> Iterator[tuple[str, bytes, bool]]:
    """The cloudnn package's own files (sources and data), under ``prefix``."""
    root = Path(__file__).resolve().parent
    for file in _walk(root):
        rel = file.relative_to(root).as_posix()
        if rel.startswith(("_templates/", "testing/", "cli/")):
            continue  # jobs and servers never use the CLI or the test suite
        if file.name.startswith("."):
            continue  # editors' swap files, atomic-write leftovers
        yield f"{prefix}cloudnn/{rel}", file.read_bytes(), False


def _requirements(pairs: tuple[tuple[str, str], ...]) -> bytes:
    lines = ["# imported by the cloudnn runtime; installed only when missing"]
    lines += [f"{req}  # import {module}" for module, req in pairs]
    return ("\n".join(lines) + "\n").encode()


def _ignore_patterns(root: Path) -> list[str]:
    path = root / IGNORE_FILE
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.startswith("#")]


def _user_files(
    root: Path, skip: set[Path], field: str
) -> Iterator[tuple[str, bytes, bool]]:
    """``root``'s files under ``user/``, minus data files, ignores and junk."""
    patterns = _ignore_patterns(root)
    for file in _walk(root):
        resolved = file.resolve()
        if resolved in skip or any(p in resolved.parents for p in skip):
            continue  # the spec's data travel as channels
        rel = file.relative_to(root).as_posix()
        if any(fnmatch.fnmatch(rel, pat) for pat in patterns):
            continue
        size = file.stat().st_size
        if size > MAX_USER_FILE:
            raise SpecError(
                field,
                f"{file} ({size // (1024 * 1024)} MiB) would be shipped with the "
                "job's code",
                hint=f"move data out of {root}, list it in data:, or add it to "
                f"{root / IGNORE_FILE}",
            )
        yield f"user/{rel}", file.read_bytes(), os.access(file, os.X_OK)


_ENTRY = '''"""Entry point of a cloudnn training job (generated into the bundle).

Runs wherever the bundle was unpacked: a SageMaker, Vertex AI or Azure ML
container, a local emulator, or by hand (``python cloudnn_entry.py``).
"""

import importlib.util
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = {requirements}


def _ensure_requirements() -> None:
    missing = [req for mod, req in REQUIREMENTS if importlib.util.find_spec(mod) is None]
    if missing:
        print("cloudnn: installing " + " ".join(missing), flush=True)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *missing])


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    # worker processes (DDP, the user's script) import the same runtime
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (HERE, os.environ.get("PYTHONPATH", "")) if p
    )
    _ensure_requirements()
    from cloudnn.runtime.job import main

    sys.exit(main(["--spec", os.path.join(HERE, "spec.json"), *sys.argv[1:]]))
'''


def bundle_spec(spec: Spec, *, relocate_code: bool = True) -> dict[str, Any]:
    """``spec`` as a job's spec.json: channel references for data, and (with
    ``relocate_code``) code paths inside the bundle's ``user/`` folder."""
    raw = spec.model_dump(mode="json")
    for ch in channels(spec):
        raw["data"][ch.name] = ch.ref
    if not relocate_code:
        return raw
    model = raw["model"]
    if spec.model.type == "script":
        script = Path(model["script"])
        source = Path(model.get("source_dir") or script.parent)
        try:
            rel = script.resolve().relative_to(source.resolve()).as_posix()
        except ValueError:
            raise SpecError(
                "model.script",
                f"{script} is not inside model.source_dir {source}",
                hint="put the script inside source_dir, or drop source_dir",
            ) from None
        model["script"] = f"user/{rel}"
        model["source_dir"] = "user"
    elif spec.model.type == "module":
        model["path"] = "user"
    return raw


def _user_root(spec: Spec) -> tuple[Path, str] | None:
    model: Any = spec.model
    if spec.model.type == "script":
        return Path(model.source_dir or Path(model.script).parent), "model.source_dir"
    if spec.model.type == "module" and model.path:
        return Path(model.path), "model.path"
    return None


def training_bundle(spec: Spec) -> Bundle:
    """The deterministic training bundle of ``spec`` (see module docstring)."""
    files: list[tuple[str, bytes, bool]] = list(_package_files(""))
    spec_json = json.dumps(bundle_spec(spec), indent=2, sort_keys=True) + "\n"
    files.append(("spec.json", spec_json.encode(), False))
    requirements = repr(list(RUNTIME_REQUIREMENTS))
    files.append(
        (BUNDLE_ENTRY, _ENTRY.format(requirements=requirements).encode(), True)
    )
    files.append(("requirements.txt", _requirements(RUNTIME_REQUIREMENTS), False))
    found = _user_root(spec)
    if found is not None:
        root, field = found
        skip = {Path(ch.source).resolve() for ch in channels(spec) if not ch.is_remote}
        files += list(_user_files(root, skip, field))
    return _bundle("training", files)


def serving_bundle(model_dir: str | os.PathLike[str] | None, platform: str) -> Bundle:
    """Model files plus the ``platform``'s adapter and the runtime under ``code/``.

    ``model_dir=None`` gives the code alone, for a platform that serves the
    model from where the job wrote it (Vertex AI's ``artifact_uri``).
    """
    from cloudnn.templates import templates_root

    if platform not in SERVING_ADAPTERS:
        raise ValueError(
            f"unknown serving platform {platform!r}; known: {sorted(SERVING_ADAPTERS)}"
        )
    adapter = templates_root() / "serving" / SERVING_ADAPTERS[platform]
    files: list[tuple[str, bytes, bool]] = []
    if model_dir is not None:
        root = Path(model_dir)
        files = [
            (file.relative_to(root).as_posix(), file.read_bytes(), False)
            for file in _walk(root)
            if not file.relative_to(root).as_posix().startswith("code/")
        ]
    files.append((f"code/{adapter.name}", adapter.read_bytes(), False))
    files += list(_package_files("code/"))
    needs = SERVING_REQUIREMENTS + (_HTTP_REQUIREMENTS if platform == "vertex" else ())
    files.append(("code/requirements.txt", _requirements(needs), False))
    return _bundle("serving", files)


def is_channel_ref(value: str) -> bool:
    return value.startswith(CHANNEL_SCHEME)
