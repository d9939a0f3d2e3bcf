"""Where cloudnn's file templates live, and copying a project template.

The repository's ``templates/`` folder holds text that cloudnn copies but does
not import: ``templates/init/<name>/`` (starter projects for ``cloudnn init``)
and ``templates/serving/`` (serving adapters for cloud bundles). It is found,
in order, at

1. ``$CLOUDNN_TEMPLATES`` (tests, or a team's own templates);
2. ``cloudnn/_templates`` inside an installed wheel (pyproject force-includes
   ``templates/`` there);
3. ``<repo>/templates`` next to the package in an editable checkout.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from cloudnn.errors import FileConflictError, NotFoundError

__all__ = [
    "DEFAULT_INIT_TEMPLATE",
    "TemplateConflictError",
    "copy_init_template",
    "init_template_dir",
    "list_init_templates",
    "templates_root",
]

TEMPLATES_ENV = "CLOUDNN_TEMPLATES"
DEFAULT_INIT_TEMPLATE = "mlp-tabular"
# Python sources are stored as `*.py.tmpl` so ruff and pytest leave them
# alone in the repo; the copy drops the suffix
_TEMPLATE_SUFFIX = ".tmpl"
_SKIP_NAMES = frozenset({"__pycache__", ".DS_Store"})


#: kept under its old name for callers of this module
TemplateConflictError = FileConflictError


def templates_root() -> Path:
    """The folder that holds ``init/`` and ``serving/`` (see module docstring)."""
    override = os.environ.get(TEMPLATES_ENV)
    if override:
        root = Path(override).expanduser()
        if not root.is_dir():
            raise NotFoundError(
                f"{TEMPLATES_ENV}={override}: no such directory",
                hint=f"point {TEMPLATES_ENV} at a folder with init/<name>/ "
                "templates, or unset it",
            )
        return root
    package = Path(__file__).resolve().parent
    for candidate in (package / "_templates", package.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise NotFoundError(
        f"cloudnn's templates folder is missing (looked in {package / '_templates'} "
        f"and {package.parent / 'templates'})",
        hint=f"reinstall cloudnn, or set {TEMPLATES_ENV} to a templates folder",
    )


def _first_readme_line(folder: Path) -> str:
    readme = folder / "README.md"
    if not readme.is_file():
        return ""
    for line in readme.read_text(encoding="utf-8").splitlines():
        text = line.strip().lstrip("#").strip()
        if text:
            return text
    return ""


def list_init_templates() -> dict[str, str]:
    """Starter-project template name -> first line of its README, sorted."""
    init = templates_root() / "init"
    if not init.is_dir():
        return {}
    return {
        d.name: _first_readme_line(d)
        for d in sorted(init.iterdir())
        if d.is_dir() and not d.name.startswith((".", "_"))
    }


def init_template_dir(name: str) -> Path:
    """The folder of starter template ``name``; NotFoundError names the others."""
    available = list_init_templates()
    if name not in available:
        import difflib

        close = difflib.get_close_matches(name, list(available), n=1)
        maybe = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(available) or "none installed"
        raise NotFoundError(
            f"unknown template {name!r}{maybe}; available: {known}",
            hint="pick one with --template NAME (`cloudnn init --list` shows them)",
        )
    return templates_root() / "init" / name


def _target_name(relative: Path) -> Path:
    if relative.name.endswith(_TEMPLATE_SUFFIX):
        return relative.with_name(relative.name[: -len(_TEMPLATE_SUFFIX)])
    return relative


def copy_init_template(
    name: str, dest: str | os.PathLike[str], *, force: bool = False
) -> list[Path]:
    """Copy starter template ``name`` into ``dest``; return the files written.

    Nothing is written if any target file exists, unless ``force``.
    """
    source = init_template_dir(name)
    dest_dir = Path(dest)
    if dest_dir.exists() and not dest_dir.is_dir():
        raise TemplateConflictError(
            f"{dest_dir}: exists and is not a directory",
            hint="pass a new or existing directory",
        )
    plan: list[tuple[Path, Path]] = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_dir() or path.suffix == ".pyc" or _SKIP_NAMES & set(relative.parts):
            continue
        plan.append((path, dest_dir / _target_name(relative)))
    # check everything before writing anything: no half-copied projects
    existing = [target for _, target in plan if target.exists()]
    if existing and not force:
        shown = ", ".join(str(p.relative_to(dest_dir)) for p in existing[:5])
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        raise TemplateConflictError(
            f"{dest_dir}: would overwrite {len(existing)} existing "
            f"file{'s' if len(existing) != 1 else ''}: {shown}{more}",
            hint="pass --force to overwrite them, or choose an empty directory",
        )
    for path, target in plan:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)  # keeps the mode: scripts stay executable
    return [target for _, target in plan]
