"""Cheap checks of a spec's data, before any run exists (numpy only, no torch).

:func:`check_data` reads what it can cheaply — CSV headers and a bounded
sample of rows, Parquet schemas, NPZ keys/shapes/dtypes from the array headers
(the values streamed only to look for NaN/infinity, up to a byte budget),
image folders' class folders and image headers — and raises
:class:`~cloudnn.errors.SpecError` naming the ``data.*`` field at fault, so
``cloudnn validate`` and ``cloudnn train`` refuse bad data with exit 2 before
a run is created. Remote data (``s3://``, ``gs://``, ...) is skipped here: the
job sees it, and the job's loader (:mod:`cloudnn.runtime.data`) calls the very
same functions below, so it refuses the same problems with the same messages.

:func:`estimate_parameters` and :func:`check_local_resources` bound what the
spec asks of one machine (processes against cores/GPUs, model size against
memory) from facts the caller passes in.
"""

from __future__ import annotations

import csv
import math
import os
import re
import struct
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cloudnn.errors import SpecError

if TYPE_CHECKING:
    from cloudnn.spec import DataSpec, Spec

__all__ = [
    "DataInfo",
    "Reference",
    "check_data",
    "check_local_resources",
    "estimate_parameters",
    "machine_facts",
]

#: cells of a CSV/Parquet file read by :func:`check_data` (a full scan below)
SAMPLE_CELLS = 2_000_000
#: rows read at least, however wide the file
MIN_SAMPLE_ROWS = 200
#: bytes of an NPZ array scanned for NaN/infinity by :func:`check_data`
SCAN_BYTES = 256 * 2**20
#: image headers read by :func:`check_data`; files beyond are the job's to read
MAX_IMAGE_HEADERS = 20_000
#: images checked end to end (every chunk read and its checksum verified)
MAX_IMAGE_VERIFY = 2_000
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: Pillow modes the loader reads as one channel (everything else becomes RGB)
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
#: words of a text column (the tokenizer's pattern, cloudnn.runtime.data.tokenize)
TOKEN_PATTERN = r"\w+(?:'\w+)*"
#: bytes per parameter while training: weights, gradients, two Adam moments
TRAIN_BYTES_PER_PARAMETER = 16

_FILE_SIGNATURES = (
    (b"PK\x03\x04", "a ZIP archive (an .npz file?)", "npz"),
    (b"PK\x05\x06", "an empty ZIP archive", "npz"),
    (b"\x93NUMPY", "a single .npy array", "npz"),
    (b"PAR1", "a Parquet file", "parquet"),
    (b"\x89PNG", "a PNG image", "images"),
    (b"\xff\xd8\xff", "a JPEG image", "images"),
)


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class DataInfo:
    """What :func:`check_data` learned about the data (facts for planning).

    ``input_shape`` is what the model sees per instance (after
    ``model.input_shape``); ``num_classes`` counts the labels in the rows
    read (exact when ``complete``). Fields are None when the data was not
    inspected: remote URIs and ``model.script`` data.
    """

    format: str  # csv | parquet | npz | images | remote | script
    kind: str | None = None  # tabular | image | sequence | text
    feature_names: tuple[str, ...] | None = None
    raw_shape: tuple[int, ...] | None = None  # per row, as stored
    input_shape: tuple[int, ...] | None = None  # per row, as the model sees it
    num_classes: int | None = None
    target_width: int | None = None  # regression outputs
    vocab_size: int | None = None  # text: an upper bound of the vocabulary
    rows_sampled: int = 0
    complete: bool = False  # every row of data.train was read
    missing_cells: int = 0  # blank cells seen (imputed with the train mean)
    checked: tuple[str, ...] = ()  # the data.* fields inspected
    skipped: tuple[str, ...] = ()  # the data.* fields left to the job

    @property
    def num_features(self) -> int | None:
        return None if self.raw_shape is None else math.prod(self.raw_shape)

    @property
    def num_outputs(self) -> int | None:
        return self.num_classes if self.num_classes is not None else self.target_width


@dataclass(frozen=True)
class Reference:
    """The training data's layout, which validation/test data must line up with.

    Built from data.train by :func:`check_data` and the loader, and from a
    saved ``preprocess.json`` for ``cloudnn evaluate --data``.
    """

    kind: str
    feature_names: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None  # data.train's header, when it has one
    target: str | None = None
    shape: tuple[int, ...] | None = None  # per-row raw shape (None for text)
    labels: frozenset[Any] | None = None  # every training label (classification)
    source: str = "data.train"


@dataclass(frozen=True)
class Table:
    """A CSV/Parquet file read as columns of raw cell values."""

    file: Path
    header: list[str]
    columns: dict[str, list[Any]]
    complete: bool = True

    @property
    def rows(self) -> int:
        return len(self.columns[self.header[0]]) if self.header else 0


@dataclass(frozen=True)
class ColumnPlan:
    """Which columns of a table are the target, the features, the groups, the text."""

    target: str
    features: tuple[str, ...]
    group: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class NpzLayout:
    """The arrays of an NPZ file that hold x, y and groups."""

    x: str
    y: str
    groups: str | None
    kind: str
    shape: tuple[int, ...]  # per-row shape of x
    rows: int


@dataclass
class _Split:
    where: str
    format: str
    kind: str
    name: str
    ref: Reference
    rows: int = 0
    complete: bool = True
    missing: int = 0
    target_width: int = 1
    words: set[str] = field(default_factory=set)
    labels: frozenset[Any] = frozenset()  # distinct labels in the rows read


# --------------------------------------------------------------- formats


def _sniff(path: Path) -> tuple[str, str] | None:
    """(what, format) when ``path`` starts with a known binary signature."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    for magic, what, fmt in _FILE_SIGNATURES:
        if head.startswith(magic):
            return what, fmt
    return None


def infer_format(path: Path, fmt: str, where: str) -> str:
    """The format of ``path`` (``data.format`` unless it is ``auto``)."""
    if fmt != "auto":
        return fmt
    if path.is_dir():
        try:
            files = [p for p in path.iterdir() if not p.name.startswith(".")]
        except OSError as exc:
            raise _unreadable(path, where, exc) from None
        if any(p.is_dir() for p in files):
            return "images"
        for ext, name in (
            (".csv", "csv"),
            (".tsv", "csv"),
            (".parquet", "parquet"),
            (".pq", "parquet"),
            (".npz", "npz"),
        ):
            if any(p.suffix.lower() == ext for p in files):
                return name
        raise SpecError(
            "data.format",
            f"cannot tell the format of folder {path} ({where}): it holds no "
            ".csv, .tsv, .parquet or .npz file and no class folders",
            hint="point the path at a data file, or set data.format: csv | npz | "
            "parquet | images",
        )
    return {
        ".parquet": "parquet",
        ".pq": "parquet",
        ".npz": "npz",
    }.get(path.suffix.lower(), "csv")


def _unreadable(path: Path, where: str, exc: OSError) -> SpecError:
    reason = exc.strerror or type(exc).__name__
    return SpecError(
        where,
        f"cannot read {path}: {reason}",
        hint="check the path and its permissions",
    )


def single_file(path: Path, exts: tuple[str, ...], where: str) -> Path:
    """A directory channel holding one data file (SageMaker-style) -> that file."""
    if path.is_file():
        return path
    if not path.exists():
        raise SpecError(
            where, f"no such file or directory: {path}", hint="fix the path"
        )
    try:
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in exts)
    except OSError as exc:
        raise _unreadable(path, where, exc) from None
    files = [p for p in files if p.is_file()]
    if not files:
        raise SpecError(
            where,
            f"no {'/'.join(exts)} file in folder {path}",
            hint="point it at the data file, or set data.format to what the "
            "folder holds",
        )
    return files[0]


def _not_this_format(file: Path, fmt: str, where: str) -> SpecError | None:
    sniffed = _sniff(file)
    if sniffed is None or sniffed[1] == fmt:
        return None
    what, other = sniffed
    return SpecError(
        where,
        f"{file.name} is not a {fmt.upper()} file: it looks like {what}",
        hint=f"set data.format: {other}, or point {where} at a {fmt} file",
    )


# ------------------------------------------------------------------ tables


def read_table(path: Path, fmt: str, where: str, *, sample: bool = False) -> Table:
    """A CSV/TSV/Parquet file as columns; ``sample`` reads a bounded prefix.

    Refuses: a folder without such a file, a binary file, text that is not
    UTF-8, NUL bytes, an empty file, a header without rows, rows whose field
    count differs from the header's, and repeated column names.
    """
    if fmt == "parquet":
        return _read_parquet(path, where, sample=sample)
    file = single_file(path, (".csv", ".tsv"), where)
    wrong = _not_this_format(file, "csv", where)
    if wrong is not None:
        raise wrong
    lineno = 0
    try:
        with open(file, newline="", encoding="utf-8-sig") as fh:
            head = fh.read(4096)
            if "\x00" in head:
                raise SpecError(
                    where,
                    f"{file.name} holds NUL bytes: it is not a text CSV",
                    hint="give a plain-text CSV, or set data.format if it is not one",
                )
            fh.seek(0)
            tab = file.suffix.lower() == ".tsv" or ("\t" in head and "," not in head)
            reader = csv.reader(fh, delimiter="\t" if tab else ",")
            first = next(reader, None)
            lineno = reader.line_num
            if not first or not any(c.strip() for c in first):
                raise SpecError(
                    where,
                    f"{file.name} is empty",
                    hint="give a CSV with a header row and data rows",
                )
            header = [h.strip() for h in first]
            _check_header(header, file.name, where)
            columns: dict[str, list[Any]] = {h: [] for h in header}
            cells = list(columns.values())
            limit = (
                max(MIN_SAMPLE_ROWS, SAMPLE_CELLS // len(header)) if sample else None
            )
            complete = True
            rows = 0
            for row in reader:
                lineno = reader.line_num
                if not row:
                    continue
                if len(row) != len(header):
                    if len(row) == 1 and not row[0].strip():
                        continue  # a line of spaces
                    raise SpecError(
                        where,
                        f"{file.name} line {lineno} has {len(row)} fields, "
                        f"the header has {len(header)}",
                        hint="fix the CSV (quote fields that contain commas)",
                    )
                for values, v in zip(cells, row, strict=True):
                    values.append(v)
                rows += 1
                if limit is not None and rows >= limit:
                    complete = next(reader, None) is None
                    break
    except UnicodeDecodeError as exc:
        raise SpecError(
            where,
            f"{file.name} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} "
            f"after line {lineno})",
            hint="save the CSV as UTF-8, or set data.format if it is not a CSV",
        ) from None
    except csv.Error as exc:
        reason = str(exc)
        if "NUL" in reason:
            reason = "holds a NUL byte: it is not a text CSV"
        raise SpecError(
            where,
            f"{file.name} line {lineno + 1}: {reason}",
            hint="give a plain-text CSV, or set data.format if it is not one",
        ) from None
    except OSError as exc:
        raise _unreadable(file, where, exc) from None
    if not rows:
        raise SpecError(
            where,
            f"{file.name} has a header but no rows",
            hint="add data rows under the header",
        )
    return Table(file, header, columns, complete)


def _check_header(header: list[str], name: str, where: str) -> None:
    seen: set[str] = set()
    for h in header:
        if h and h in seen:
            raise SpecError(
                where,
                f"{name}: column {h!r} appears twice in the header",
                hint="give every column its own name",
            )
        seen.add(h)


def _read_parquet(path: Path, where: str, *, sample: bool) -> Table:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise SpecError(
            "data.format",
            "reading Parquet needs pyarrow, which is not installed",
            hint='pip install "cloudnn[parquet]"',
        ) from exc
    file = single_file(path, (".parquet", ".pq"), where)
    try:
        pf = pq.ParquetFile(file)
        header = [str(c) for c in pf.schema_arrow.names]
        total = pf.metadata.num_rows
        if sample and header:
            limit = max(MIN_SAMPLE_ROWS, SAMPLE_CELLS // len(header))
            batch = next(pf.iter_batches(batch_size=limit), None)
            table = (
                pa.Table.from_batches([batch])
                if batch is not None
                else pf.schema_arrow.empty_table()
            )
        else:
            table = pf.read()
    except (OSError, pa.ArrowException) as exc:
        raise SpecError(
            where,
            f"cannot read {file.name} as Parquet: {exc}".splitlines()[0],
            hint="give a Parquet file, or set data.format to what it is",
        ) from None
    _check_header(header, file.name, where)
    if table.num_rows == 0 or not header:
        raise SpecError(where, f"{file.name} has no rows", hint="add data rows")
    columns = {c: table.column(c).to_pylist() for c in header}
    return Table(file, header, columns, complete=table.num_rows >= total)


def plan_columns(
    header: Sequence[str],
    data: DataSpec,
    *,
    file: str,
    where: str,
    reference: Reference | None = None,
    labelled: bool = True,
) -> ColumnPlan:
    """Pick the target, feature, group and text columns of one table, by name.

    With a ``reference`` (data.train's layout) the features are data.train's,
    found by name wherever they stand; a missing one, or (when data.features
    is not given) a column data.train does not have, is refused.
    """
    cols = list(header)
    shown = ", ".join(map(repr, cols[:12])) + (", ..." if len(cols) > 12 else "")
    target = data.target or (reference.target if reference else None) or cols[-1]
    if labelled and target not in cols:
        raise SpecError(
            "data.target",
            f"no column {target!r} in {file} (columns: {shown})",
            hint="set data.target to the label column"
            if reference is None
            else f"give {file} the label column {target!r}, as in {reference.source}",
        )
    group = data.group_column
    if group and group not in cols:
        raise SpecError(
            "data.group_column",
            f"no column {group!r} in {file} (columns: {shown})",
            hint="set data.group_column to an existing column",
        )
    if data.text is not None:
        if data.text.column not in cols:
            raise SpecError(
                "data.text.column",
                f"no column {data.text.column!r} in {file} (columns: {shown})",
                hint="set data.text.column to the text column",
            )
        return ColumnPlan(target, (data.text.column,), group, data.text.column)
    if reference is not None and reference.feature_names is not None:
        features = list(reference.feature_names)
        missing = [n for n in features if n not in cols]
        if missing:
            raise SpecError(
                where,
                f"{file} has no column(s) {_names(missing)} that "
                f"{reference.source} has (its columns: {shown})",
                hint="give every file the training columns under the same "
                "header names (they are matched by name, in any order)",
            )
        if data.features is None and reference.columns is not None:
            extra = [c for c in cols if c not in reference.columns]
            if extra:
                raise SpecError(
                    where,
                    f"{file} has column(s) {_names(extra)} that "
                    f"{reference.source} does not have",
                    hint="give every file the same columns as the training data "
                    "(or list the feature columns in data.features)",
                )
        return ColumnPlan(target, tuple(features), group)
    if data.features is not None:
        missing = [n for n in data.features if n not in cols]
        if missing:
            raise SpecError(
                "data.features",
                f"no column(s) {_names(missing)} in {file} (columns: {shown})",
                hint="list existing columns in data.features",
            )
        if target in data.features:
            raise SpecError(
                "data.features",
                f"lists the target column {target!r}: the model would be given "
                "the label it has to predict",
                hint=f"remove {target!r} from data.features, or set data.target "
                "to the label column",
            )
        return ColumnPlan(target, tuple(data.features), group)
    features = [h for h in cols if h not in (target, group)]
    unnamed = [i + 1 for i, h in enumerate(cols) if not h and h in features]
    if unnamed:
        raise SpecError(
            where,
            f"{file}: column {unnamed[0]} has no name in the header row",
            hint="name it, or drop it (pandas: to_csv(..., index=False)); or list "
            "the feature columns in data.features",
        )
    if not features:
        raise SpecError(
            "data.features",
            f"{file} has no feature columns besides the target {target!r}",
            hint="add feature columns to the file",
        )
    return ColumnPlan(target, tuple(features), group)


def _names(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(map(repr, names[:limit]))
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def is_blank(v: Any) -> bool:
    """A missing value: None or a string of spaces (a blank CSV cell)."""
    return v is None or (isinstance(v, str) and not v.strip())


def numeric_column(
    values: Sequence[Any], column: str, *, file: str
) -> tuple[np.ndarray, int]:
    """(float64 values with NaN where a cell is blank, number of blank cells).

    Blank cells (``""``, a Parquet null) are missing: imputed later with the
    training mean. Text and non-finite numbers ("nan", "inf") are refused.
    """
    try:
        out = np.asarray(values, dtype=np.float64)
        if out.ndim == 1 and np.isfinite(out).all():
            return out, 0
    except (TypeError, ValueError, OverflowError):
        pass
    out = np.empty(len(values), dtype=np.float64)
    missing = 0
    for i, v in enumerate(values):
        if is_blank(v):
            out[i] = np.nan
            missing += 1
            continue
        try:
            f = float(v)
        except (TypeError, ValueError, OverflowError):
            raise SpecError(
                "data.features",
                f"column {column!r} is not numeric (value {_short(v)} in row "
                f"{i + 1} of {file})",
                hint="list only numeric columns in data.features, "
                "or use data.text for a text column",
            ) from None
        if not math.isfinite(f):
            raise SpecError(
                "data.features",
                f"column {column!r} holds the non-finite value {_short(v)} "
                f"(row {i + 1} of {file})",
                hint="leave missing cells empty (they are imputed with the "
                "training mean) and replace infinities with numbers",
            )
        out[i] = f
    return out, missing


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


# ------------------------------------------------------------------ labels


def label_values(values: Sequence[Any] | np.ndarray) -> list[Any]:
    """Numbers stay numbers (ints when whole), anything else a stripped string."""
    out: list[Any] = []
    for v in values.tolist() if isinstance(values, np.ndarray) else values:
        if isinstance(v, bool):
            out.append(str(v))
            continue
        if isinstance(v, int | float):
            f = float(v)
            out.append(int(f) if f.is_integer() else f)
            continue
        s = str(v).strip()
        try:
            f = float(s)
        except ValueError:
            out.append(s)
            continue
        out.append(int(f) if f.is_integer() else f)
    return out


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def regression_targets(
    labels: Sequence[Any] | np.ndarray, *, file: str = ""
) -> np.ndarray:
    """Regression targets as float64; refuses text, blanks and non-finite values."""
    where = f" in {file}" if file else ""
    try:
        y = np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        bad = next((v for v in labels if not is_blank(v) and not _is_number(v)), None)
        if bad is None:
            y = np.asarray(
                [np.nan if is_blank(v) else float(v) for v in labels],
                dtype=np.float64,
            )
        else:
            raise SpecError(
                "data.target",
                f"regression targets must be numbers, got {_short(bad)}{where}",
                hint="check data.target, or use task: classification for labels",
            ) from None
    if not np.isfinite(y).all():
        raise SpecError(
            "data.target",
            f"{int((~np.isfinite(y)).sum())} regression target(s){where} are "
            "missing or not finite",
            hint="drop the rows without a target value",
        )
    return y


def check_labels(
    labels: Sequence[Any] | np.ndarray, task: str, *, file: str
) -> tuple[frozenset[Any], int]:
    """(distinct labels, target width) of one split; refuses unusable labels.

    Classification labels must be one per row and not blank; regression
    targets must be finite numbers, one or several per row.
    """
    arr = labels if isinstance(labels, np.ndarray) else None
    if task == "regression":
        y = regression_targets(labels, file=file)
        if y.ndim > 2:
            raise SpecError(
                "data.target",
                f"regression targets in {file} have shape {list(y.shape)}; "
                "expected (N,) or (N, outputs)",
                hint="reshape y to one row of target values per example",
            )
        return frozenset(), 1 if y.ndim == 1 else int(y.shape[1])
    if arr is not None and arr.ndim != 1:
        raise SpecError(
            "data.target",
            f"classification labels in {file} have shape {list(arr.shape)}; "
            "expected one label per row, shape (N,)",
            hint="store class labels as a 1-D array (one-hot rows: y.argmax(axis=1))",
        )
    blank = [
        i
        for i, v in enumerate(arr.tolist() if arr is not None else labels)
        if is_blank(v) or (isinstance(v, float) and math.isnan(v))
    ]
    if blank:
        raise SpecError(
            "data.target",
            f"{len(blank)} row(s) of {file} have no label (the first is row "
            f"{blank[0] + 1})",
            hint="drop the rows without a label, or fill them in",
        )
    values = label_values(labels)
    odd = [
        i for i, v in enumerate(values) if isinstance(v, float) and not math.isfinite(v)
    ]
    if odd:
        raise SpecError(
            "data.target",
            f"{len(odd)} row(s) of {file} have a NaN or infinite label (the first "
            f"is row {odd[0] + 1}: {values[odd[0]]!r})",
            hint="drop those rows, or give them a class label",
        )
    return frozenset(values), 1


def check_class_count(labels: Iterable[Any], *, file: str) -> None:
    """Classification needs two classes or more in the training data."""
    uniq = sorted(set(labels), key=lambda v: (isinstance(v, str), str(v)))
    if len(uniq) < 2:
        raise SpecError(
            "data.target",
            f"the label column has {len(uniq)} distinct value(s) "
            f"({', '.join(map(repr, uniq[:1]))}) in {file}; classification "
            "needs 2+",
            hint="check data.target, or use task: regression",
        )


def check_known_labels(
    labels: Iterable[Any], reference: Reference, *, file: str
) -> None:
    """Every label of a validation/test split occurs in the training data."""
    if reference.labels is None:
        return
    unseen = sorted(
        {v for v in labels if v not in reference.labels}, key=lambda v: str(v)
    )
    if unseen:
        known = sorted(reference.labels, key=lambda v: (isinstance(v, str), str(v)))
        raise SpecError(
            "data.target",
            f"label {unseen[0]!r} in {file} does not occur in the training data "
            f"(classes: {', '.join(map(repr, known[:10]))}"
            + (", ..." if len(known) > 10 else "")
            + ")",
            hint="every label must occur in the training file",
        )


# --------------------------------------------------------------------- NPZ


def npz_members(path: Path, where: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array in an .npz, read from the array headers."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _not_npz(path, where, exc) from None
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    with zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            try:
                with zf.open(info) as fh:
                    shape, _, dtype = _npy_header(fh)
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
                raise _not_npz(path, where, exc) from None
            out[info.filename[:-4]] = (shape, dtype)
    return out


def _npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    from numpy.lib import format as npformat

    version = npformat.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = npformat.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = npformat.read_array_header_2_0(fh)
    else:  # (3, 0): utf-8 field names; no public reader
        shape, fortran, dtype = npformat._read_array_header(fh, version)  # type: ignore[attr-defined]
    return tuple(int(d) for d in shape), bool(fortran), np.dtype(dtype)


def _not_npz(path: Path, where: str, exc: BaseException) -> SpecError:
    sniffed = _sniff(path)
    if sniffed is not None and not sniffed[0].startswith("a ZIP"):
        reason = f"it looks like {sniffed[0]}"
    else:
        reason = f"{exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return SpecError(
        where,
        f"cannot read {path.name} as .npz: {reason}",
        hint="save it with np.savez(path, x=..., y=...), or set data.format "
        "to what it is",
    )


def npz_layout(
    members: Mapping[str, tuple[tuple[int, ...], np.dtype]],
    data: DataSpec,
    task: str,
    *,
    file: str,
    where: str,
    reference: Reference | None = None,
) -> NpzLayout:
    """Which arrays are x, y and groups; refuses keys, shapes and dtypes that
    cannot train: a missing key, object arrays, non-numeric or 1-D x, x with
    no rows, lengths that differ, a rank or row shape other than data.train's.
    """
    keys = list(members)
    xkey = "x" if "x" in members else ("X" if "X" in members else None)
    ykey = data.target or ("y" if "y" in members else ("Y" if "Y" in members else None))
    if xkey is None or ykey is None or ykey not in members:
        raise SpecError(
            "data.target" if data.target and xkey is not None else where,
            f"{file} needs arrays 'x' and {ykey or 'y'!r} "
            f"(it has: {', '.join(map(repr, keys)) or 'none'})",
            hint="save with np.savez(path, x=..., y=...), or set data.target "
            "to the label key",
        )
    gkey = "groups" if "groups" in members else None
    for key in (xkey, ykey, gkey):
        if key is not None and members[key][1].hasobject:
            raise SpecError(
                where,
                f"{file}: array {key!r} holds Python objects (dtype object), "
                "which cloudnn does not unpickle",
                hint="save numbers (or, for labels and groups, strings): "
                f"np.savez(path, {key}=np.asarray(values, dtype=str or float))",
            )
    xshape, xdtype = members[xkey]
    if xdtype.kind not in "biuf":
        raise SpecError(
            where,
            f"{file}: x must be numeric, got dtype {xdtype}",
            hint="store features as numbers",
        )
    kind = {2: "tabular", 3: "sequence", 4: "image"}.get(len(xshape))
    if kind is None:
        raise SpecError(
            where,
            f"{file}: x must be 2-D (rows, features), 3-D (sequences) or 4-D "
            f"(images N, C, H, W), got {len(xshape)}-D shape {list(xshape)}",
            hint="reshape x, e.g. x.reshape(len(x), -1) for one feature row each",
        )
    rows = xshape[0]
    if rows == 0:
        raise SpecError(where, f"{file}: x has no rows", hint="add data")
    if 0 in xshape[1:]:
        raise SpecError(
            where,
            f"{file}: x has shape {list(xshape)}, with no values per row",
            hint="give every row at least one feature",
        )
    lengths = {k: members[k][0][0] if members[k][0] else 0 for k in (ykey, gkey) if k}
    if any(n != rows for n in lengths.values()):
        raise SpecError(
            where,
            f"{file}: x has {rows} rows, "
            + ", ".join(f"{k} has {n}" for k, n in lengths.items()),
            hint="give every array one entry per example",
        )
    yshape, ydtype = members[ykey]
    if task == "classification" and len(yshape) != 1:
        raise SpecError(
            "data.target",
            f"{file}: classification labels {ykey!r} have shape {list(yshape)}; "
            "expected one label per row, shape (N,)",
            hint="store class labels as a 1-D array (one-hot rows: y.argmax(axis=1))",
        )
    if task == "regression":
        if ydtype.kind not in "biuf":
            raise SpecError(
                "data.target",
                f"{file}: regression targets {ykey!r} must be numbers, got "
                f"dtype {ydtype}",
                hint="check data.target, or use task: classification for labels",
            )
        if len(yshape) > 2:
            raise SpecError(
                "data.target",
                f"{file}: regression targets {ykey!r} have shape {list(yshape)}; "
                "expected (N,) or (N, outputs)",
                hint="reshape y to one row of target values per example",
            )
    shape = tuple(xshape[1:])
    if reference is not None:
        check_same_layout(kind, shape, reference, file=file, where=where)
    return NpzLayout(xkey, ykey, gkey, kind, shape, rows)


def check_same_layout(
    kind: str,
    shape: tuple[int, ...] | None,
    reference: Reference,
    *,
    file: str,
    where: str,
) -> None:
    """A validation/test split holds the training data's kind and row shape."""
    if kind != reference.kind:
        raise SpecError(
            where,
            f"{file} holds {kind} data, {reference.source} holds {reference.kind} data",
            hint="give every split in the same format",
        )
    if shape is not None and reference.shape is not None and shape != reference.shape:
        field = "data.image_size" if kind == "image" else where
        raise SpecError(
            field,
            f"{file} has rows of shape {list(shape)}, {reference.source} has "
            f"{list(reference.shape)}",
            hint="set data.image_size: [H, W] to resize every split alike"
            if kind == "image"
            else "give every split rows of the same shape",
        )


def check_finite(x: np.ndarray, *, what: str, file: str, where: str) -> None:
    """Refuse NaN/infinity in an array (only CSV/Parquet blanks are imputed)."""
    if x.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(x)
    if bad.any():
        first = np.unravel_index(int(np.argmax(bad)), x.shape)
        raise SpecError(
            where,
            f"{file}: {what} holds NaN or infinite values, the first at index "
            f"{list(map(int, first))}",
            hint="clean or drop those rows before training (cloudnn imputes "
            "only blank CSV/Parquet cells)",
        )


def _scan_npz_member(
    path: Path, key: str, *, file: str, where: str, what: str, budget: int
) -> tuple[bool, int]:
    """Stream one array's values looking for NaN/infinity: (complete, bytes read)."""
    with zipfile.ZipFile(path) as zf, zf.open(key + ".npy") as fh:
        shape, _, dtype = _npy_header(fh)
        if dtype.kind not in "fc":
            return True, 0
        total = math.prod(shape) * dtype.itemsize
        step = max(dtype.itemsize, (8 * 2**20) // dtype.itemsize * dtype.itemsize)
        done = 0
        while done < min(total, budget):
            chunk = fh.read(min(step, total - done))
            if not chunk:
                break
            usable = len(chunk) // dtype.itemsize * dtype.itemsize
            values = np.frombuffer(chunk[:usable], dtype=dtype)
            bad = ~np.isfinite(values)
            if bad.any():
                index = (done // dtype.itemsize) + int(np.argmax(bad))
                first = np.unravel_index(index, shape)
                raise SpecError(
                    where,
                    f"{file}: {what} holds NaN or infinite values, the first at "
                    f"index {list(map(int, first))}",
                    hint="clean or drop those rows before training (cloudnn "
                    "imputes only blank CSV/Parquet cells)",
                )
            done += usable
        return done >= total, done


# ------------------------------------------------------------------ images


def image_classes(root: Path, where: str) -> list[tuple[str, list[Path]]]:
    """(class name, image files) per class folder that holds images, sorted."""
    if not root.is_dir():
        raise SpecError(
            where,
            f"{root} is not a folder of class folders",
            hint="point it at root/ holding root/<class>/*.png",
        )
    try:
        dirs = sorted(
            p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        found = [
            (
                d.name,
                sorted(
                    f
                    for f in d.iterdir()
                    if f.suffix.lower() in IMAGE_EXT and not f.name.startswith(".")
                ),
            )
            for d in dirs
        ]
    except OSError as exc:
        raise _unreadable(root, where, exc) from None
    found = [(name, files) for name, files in found if files]
    if not found:
        raise SpecError(
            where,
            f"no images under {root} (expected {root.name}/<class>/*.png)",
            hint="put one folder per class with .png/.jpg files in it",
        )
    return found


def check_image_classes(
    classes: Sequence[str], task: str, *, root: Path, where: str
) -> None:
    """Classification needs 2+ class folders; regression needs numeric names."""
    if task == "classification" and len(classes) < 2:
        raise SpecError(
            where,
            f"{root} has images of one class only ({classes[0]!r}); "
            "classification needs 2+ class folders",
            hint=f"add a folder per class: {root.name}/<class>/*.png",
        )
    if task == "regression":
        bad = [c for c in classes if not _is_number(c)]
        if bad:
            raise SpecError(
                "data.target",
                f"regression targets must be numbers, but image folder {root} "
                f"has class folder {bad[0]!r}",
                hint="name each folder by its target value, or use task: "
                "classification",
            )


def decode_image_file(path: Path) -> np.ndarray:
    """(H, W) or (H, W, C) pixels as stored (uint8, or floats in [0, 1])."""
    try:
        from PIL import Image
    except ImportError:  # matplotlib reads PNG itself; other formats need Pillow
        import matplotlib.image as mpimg

        return np.asarray(mpimg.imread(path))
    with Image.open(path) as im:
        mode = im.mode
        if mode in GRAY_MODES:
            return np.asarray(im.convert("L"))
        if mode != "RGB":
            return np.asarray(im.convert("RGB"))  # palette, RGBA, CMYK: drop alpha
        return np.asarray(im)


def image_header(path: Path, *, verify: bool = False) -> tuple[int, int, bool]:
    """(height, width, is it colour) from an image's header; raises on a bad file.

    With Pillow only the header is parsed (``verify`` also reads every chunk
    and checks its checksum); without it PNG headers are parsed by hand.
    """
    try:
        from PIL import Image
    except ImportError:
        return _png_header(path)
    with Image.open(path) as im:
        w, h = im.size
        colour = im.mode not in GRAY_MODES
        if verify:
            im.verify()
    return int(h), int(w), colour


def _png_header(path: Path) -> tuple[int, int, bool]:
    with open(path, "rb") as fh:
        head = fh.read(33)
    if (
        len(head) < 33
        or not head.startswith(b"\x89PNG\r\n\x1a\n")
        or head[12:16] != b"IHDR"
    ):
        raise ValueError("not a PNG image (reading other formats needs Pillow)")
    w, h, _, colour_type = struct.unpack(">IIBB", head[16:26])
    return int(h), int(w), colour_type in (2, 3, 6)


def check_image_sizes(
    sizes: Mapping[tuple[int, int], Path], data: DataSpec, *, where: str
) -> None:
    """Images of one folder share a size unless data.image_size resizes them."""
    if data.image_size is not None or len(sizes) <= 1:
        return
    examples = sorted(sizes)[:3]
    shown = ", ".join(f"{h}x{w} ({sizes[(h, w)].name})" for h, w in examples)
    raise SpecError(
        "data.image_size",
        f"images under {where} have different sizes (height x width), e.g. {shown}",
        hint="set data.image_size: [H, W] to resize them",
    )


def _image_read_error(path: Path, where: str, exc: BaseException) -> SpecError:
    text = f"{exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return SpecError(
        where,
        f"cannot read image {path}: {text}",
        hint="remove or re-save the file",
    )


# ---------------------------------------------------------------- models


def model_input_shape(
    kind: str, raw_shape: tuple[int, ...], input_shape: Sequence[int] | None
) -> tuple[int, ...]:
    """The per-instance shape the model sees: ``raw_shape`` reshaped by
    ``model.input_shape`` (which must hold as many values)."""
    if input_shape is None:
        return raw_shape
    want = tuple(int(d) for d in input_shape)
    have = math.prod(raw_shape)
    if kind == "image" and want != raw_shape:
        raise SpecError(
            "model.input_shape",
            f"{list(want)} does not match the images, which are "
            f"{list(raw_shape)} (C, H, W)",
            hint=f"set model.input_shape: {list(raw_shape)}, or data."
            "image_size: [H, W] (and data.grayscale for 1 channel) to resize",
        )
    if math.prod(want) != have:
        root = math.isqrt(have)
        raise SpecError(
            "model.input_shape",
            f"{list(want)} holds {math.prod(want)} values, the data has {have} per row",
            hint="make the product of input_shape equal the number of features, "
            f"e.g. [1, {have}, 1]"
            + (f" or [1, {root}, {root}]" if root**2 == have else ""),
        )
    return want


def check_model_input(model_type: str, kind: str, shape: tuple[int, ...]) -> None:
    """The built-in model can take data of this kind and per-instance shape."""
    if model_type == "mlp" and kind == "text":
        raise SpecError(
            "model.type",
            "mlp does not take text",
            hint="use rnn or transformer for data.text",
        )
    if model_type == "cnn" and len(shape) != 3:
        raise SpecError(
            "model.input_shape",
            f"cnn needs images (C, H, W); the data has rows of shape {list(shape)}",
            hint="set model.input_shape, e.g. [1, 8, 8] for 64 pixel columns",
        )
    if model_type == "transformer" and kind != "text":
        raise SpecError(
            "model.type", "transformer takes token ids", hint="set data.text"
        )


# ------------------------------------------------------------ check_data


def check_data(spec: Spec) -> DataInfo:
    """Inspect every local data path of ``spec`` cheaply; raise SpecError on
    anything the job could not train on.

    Reads headers, keys, shapes, dtypes and a bounded sample of rows; never
    imports torch. URIs are skipped (the job checks them with the same
    functions). For ``model.script`` only that the paths can be read: the
    script reads the data, not cloudnn.
    """
    from cloudnn.spec import is_uri

    data = spec.data
    fields = [
        (f"data.{key}", value)
        for key in ("train", "validation", "test")
        if (value := getattr(data, key))
    ]
    skipped = tuple(f for f, v in fields if is_uri(v))
    local = [(f, Path(v).expanduser()) for f, v in fields if not is_uri(v)]
    if spec.model.type == "script":
        for where, path in local:
            _check_readable(path, where)
        return DataInfo(
            format="script",
            checked=tuple(f for f, _ in local),
            skipped=skipped,
        )
    train: _Split | None = None
    splits: list[_Split] = []
    for where, path in local:
        reference = train.ref if train is not None else None
        split = _inspect(path, spec, where, reference)
        if where == "data.train":
            train = split
        splits.append(split)
    if train is None:
        checked = tuple(s.where for s in splits)
        return DataInfo(format="remote", checked=checked, skipped=skipped)
    raw_shape = train.ref.shape
    input_shape: tuple[int, ...] | None = None
    if train.kind == "text":
        assert data.text is not None
        input_shape = (data.text.max_length,)
    elif raw_shape is not None:
        input_shape = model_input_shape(
            train.kind, raw_shape, getattr(spec.model, "input_shape", None)
        )
    if input_shape is not None and spec.model.type in ("mlp", "cnn", "transformer"):
        check_model_input(spec.model.type, train.kind, input_shape)
    vocab = None
    if data.text is not None:
        vocab = data.text.vocab_size
        if train.complete:
            vocab = min(vocab, len(train.words) + 2)
    return DataInfo(
        format=train.format,
        kind=train.kind,
        feature_names=train.ref.feature_names,
        raw_shape=raw_shape,
        input_shape=input_shape,
        num_classes=len(train.labels) if spec.task == "classification" else None,
        target_width=train.target_width if spec.task == "regression" else None,
        vocab_size=vocab,
        rows_sampled=sum(s.rows for s in splits),
        complete=train.complete,
        missing_cells=sum(s.missing for s in splits),
        checked=tuple(s.where for s in splits),
        skipped=skipped,
    )


def _check_readable(path: Path, where: str) -> None:
    if not path.exists():
        raise SpecError(
            where, f"no such file or directory: {path}", hint="fix the path"
        )
    try:
        if path.is_dir():
            next(iter(os.scandir(path)), None)
        else:
            with open(path, "rb") as fh:
                fh.read(1)
    except OSError as exc:
        raise _unreadable(path, where, exc) from None


def _inspect(path: Path, spec: Spec, where: str, reference: Reference | None) -> _Split:
    data = spec.data
    fmt = infer_format(path, data.format, where)
    if fmt == "npz":
        return _inspect_npz(single_file(path, (".npz",), where), spec, where, reference)
    if fmt == "images":
        return _inspect_images(path, spec, where, reference)
    if fmt not in ("csv", "parquet"):  # pragma: no cover - the spec's Literal
        raise SpecError("data.format", f"unknown format {fmt!r}", hint="use csv")
    table = read_table(path, fmt, where, sample=True)
    name = table.file.name
    plan = plan_columns(table.header, data, file=name, where=where, reference=reference)
    labels, width = check_labels(table.columns[plan.target], spec.task, file=name)
    missing = 0
    words: set[str] = set()
    if plan.text is not None:
        kind, shape = "text", None
        text_spec = data.text
        assert text_spec is not None
        for text in table.columns[plan.text]:
            text = str(text or "")
            words.update(
                re.findall(TOKEN_PATTERN, text.lower() if text_spec.lowercase else text)
            )
    else:
        kind, shape = "tabular", (len(plan.features),)
        for column in plan.features:
            missing += numeric_column(table.columns[column], column, file=name)[1]
    ref = _reference(
        name,
        kind,
        plan.features,
        table.header,
        plan.target,
        shape,
        labels,
        table.complete,
        spec.task,
        where,
        reference,
    )
    if reference is not None:
        check_same_layout(kind, shape, reference, file=name, where=where)
        if spec.task == "classification":
            check_known_labels(labels, reference, file=name)
    return _Split(
        where,
        fmt,
        kind,
        name,
        ref,
        table.rows,
        table.complete,
        missing,
        width,
        words,
        labels,
    )


def _reference(
    name: str,
    kind: str,
    features: Sequence[str] | None,
    columns: Sequence[str] | None,
    target: str | None,
    shape: tuple[int, ...] | None,
    labels: frozenset[Any],
    complete: bool,
    task: str,
    where: str,
    reference: Reference | None,
) -> Reference:
    if where == "data.train" and task == "classification" and complete:
        check_class_count(labels, file=name)
    return Reference(
        kind=kind,
        feature_names=tuple(features) if features is not None else None,
        columns=tuple(columns) if columns is not None else None,
        target=target,
        shape=shape,
        # a label set is only a fact when every row was read
        labels=labels if task == "classification" and complete else None,
        source=where,
    )


def _inspect_npz(
    file: Path, spec: Spec, where: str, reference: Reference | None
) -> _Split:
    members = npz_members(file, where)
    layout = npz_layout(
        members, spec.data, spec.task, file=file.name, where=where, reference=reference
    )
    complete, used = _scan_npz_member(
        file, layout.x, file=file.name, where=where, what="x", budget=SCAN_BYTES
    )
    try:
        with np.load(file, allow_pickle=False) as z:
            y = np.asarray(z[layout.y])
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise _not_npz(file, where, exc) from None
    labels, width = check_labels(y, spec.task, file=file.name)
    ref = _reference(
        file.name,
        layout.kind,
        [f"x{i}" for i in range(layout.shape[0])] if layout.kind == "tabular" else None,
        None,
        layout.y,
        layout.shape,
        labels,
        True,
        spec.task,
        where,
        reference,
    )
    if reference is not None and spec.task == "classification":
        check_known_labels(labels, reference, file=file.name)
    rows = (
        layout.rows if complete else max(1, used // max(1, _row_bytes(members, layout)))
    )
    return _Split(
        where,
        "npz",
        layout.kind,
        file.name,
        ref,
        rows,
        complete,
        0,
        width,
        set(),
        labels,
    )


def _row_bytes(
    members: Mapping[str, tuple[tuple[int, ...], np.dtype]], layout: NpzLayout
) -> int:
    shape, dtype = members[layout.x]
    return math.prod(shape[1:]) * dtype.itemsize


def _inspect_images(
    root: Path, spec: Spec, where: str, reference: Reference | None
) -> _Split:
    data = spec.data
    classes = image_classes(root, where)
    names = [c for c, _ in classes]
    if where == "data.train":
        check_image_classes(names, spec.task, root=root, where=where)
    sizes: dict[tuple[int, int], Path] = {}
    colour = False
    seen = 0
    complete = True
    # round-robin over the classes, so a sample covers each of them
    queue = [list(files) for _, files in classes]
    order: list[Path] = []
    while any(queue) and len(order) < MAX_IMAGE_HEADERS:
        for files in queue:
            if files and len(order) < MAX_IMAGE_HEADERS:
                order.append(files.pop(0))
    complete = not any(queue)
    for i, f in enumerate(order):
        try:
            h, w, c = image_header(f, verify=i < MAX_IMAGE_VERIFY)
            if i < len(classes):  # decode the first image of each class in full
                decode_image_file(f)
        except Exception:  # noqa: BLE001 - what the loader would say decides
            try:  # refuse only what the loader's decoder refuses, in its words
                img = decode_image_file(f)
            except Exception as exc:  # any decoder error: name the file
                raise _image_read_error(f, where, exc) from None
            h, w = int(img.shape[0]), int(img.shape[1])
            c = img.ndim == 3 and img.shape[2] >= 3
        sizes.setdefault((h, w), f)
        colour = colour or c
        seen += 1
    check_image_sizes(sizes, data, where=where)
    channels = 1 if data.grayscale or not colour else 3
    if data.image_size is not None:
        hw = tuple(int(d) for d in data.image_size)
    else:
        hw = next(iter(sizes))
    shape = (channels, hw[0], hw[1])
    labels: frozenset[Any] = frozenset(label_values(names))
    ref = _reference(
        root.name,
        "image",
        None,
        None,
        None,
        shape,
        labels,
        True,
        spec.task,
        where,
        reference,
    )
    if reference is not None:
        # a colour test folder for a gray train folder is converted alike
        if reference.shape is not None:
            shape = (reference.shape[0], *shape[1:])
        check_same_layout("image", shape, reference, file=str(root), where=where)
        if spec.task == "classification":
            check_known_labels(labels, reference, file=root.name)
    return _Split(
        where, "images", "image", root.name, ref, seen, complete, 0, 1, set(), labels
    )


# ---------------------------------------------------------------- resources


def estimate_parameters(spec: Spec, info: DataInfo) -> int:
    """Trainable parameters of ``spec``'s built-in model on data like ``info``.

    Exact for the built-in models when ``info`` knows the input shape and the
    number of outputs; otherwise a lower bound (one input, two outputs).
    0 for ``model.module`` and ``model.script`` (their size is unknowable here).
    """
    m: Any = spec.model
    k = info.num_outputs or (2 if spec.task == "classification" else 1)
    shape = info.input_shape or ()
    if m.type == "mlp":
        width = math.prod(shape) if shape else 1
        total = 0
        for h in m.hidden_sizes:
            total += width * h + h + (2 * h if m.batch_norm else 0)
            width = h
        return int(total + width * k + k)
    if m.type == "cnn":
        c, h, w = shape if len(shape) == 3 else (1, 1, 1)
        total = 0
        for out_c in m.channels:
            total += c * out_c * m.kernel_size**2 + out_c
            total += 2 * out_c if m.batch_norm else 0
            if min(h, w) >= 4:
                h, w = h // 2, w // 2
            c = out_c
        head = c * h * w * m.hidden_size + m.hidden_size + m.hidden_size * k + k
        return int(total + head)
    if m.type == "rnn":
        gates = 4 if m.cell == "lstm" else 3
        hidden = m.hidden_size
        text = info.kind == "text"
        size = m.embedding_dim if text else (shape[-1] if len(shape) >= 2 else 1)
        total = (info.vocab_size or 2) * m.embedding_dim if text else 0

        def cell(n_in: int) -> int:
            return int(gates * (n_in * hidden + hidden * hidden + 2 * hidden))

        if m.bidirectional:
            for _ in range(m.num_layers):
                total += 2 * cell(size)
                size = 2 * hidden
        else:
            for _ in range(m.num_layers):
                total += cell(size)
                size = hidden
        width = hidden * (2 if m.bidirectional else 1)
        return int(total + width * k + k)
    if m.type == "transformer":
        d, ff = m.d_model, m.dim_feedforward
        max_length = spec.data.text.max_length if spec.data.text else 1
        total = (info.vocab_size or 2) * d + (max_length + 1) * d + d
        layer = 4 * d * d + 4 * d + 2 * d * ff + ff + d + 4 * d
        return int(total + m.num_layers * layer + 2 * d + d * k + k)
    return 0


def _largest_model_field(spec: Spec) -> str:
    m: Any = spec.model
    return {
        "mlp": "model.hidden_sizes",
        "cnn": "model.hidden_size"
        if m.type == "cnn" and m.hidden_size >= max(m.channels)
        else "model.channels",
        "rnn": "model.hidden_size",
        "transformer": "model.dim_feedforward"
        if m.type == "transformer" and m.dim_feedforward > m.d_model
        else "model.d_model",
    }.get(m.type, "model")


def check_local_resources(
    spec: Spec,
    info: DataInfo,
    *,
    cpu_count: int,
    memory_bytes: int,
    gpu_count: int = 0,
) -> None:
    """Refuse what this machine cannot run (pure: the caller passes its facts).

    ``cpu_count``: usable cores (os.cpu_count()); ``memory_bytes``: memory
    the model trains in (RAM, or the smallest GPU's memory when training on
    GPUs); ``gpu_count``: visible GPUs. Checks processes per node against
    cores or GPUs, a GPU asked for where there is none, and the model's
    training footprint (weights, gradients, optimizer state per process)
    against memory.
    """
    device = spec.providers.local.device
    if device == "cuda" and gpu_count == 0:
        raise SpecError(
            "providers.local.device",
            "is 'cuda', but this machine has no GPU that torch can see",
            hint="set providers.local.device: auto (or cpu)",
        )
    on_gpu = gpu_count > 0 and device != "cpu"
    asked = spec.resources.processes_per_node
    nprocs = max(1, gpu_count) if asked == "auto" else int(asked)
    if on_gpu and nprocs > gpu_count:
        raise SpecError(
            "resources.processes_per_node",
            f"{nprocs} processes, but this machine has {gpu_count} GPU(s): the "
            "local backend runs one process per GPU",
            hint=f"use at most {gpu_count} (or 'auto')",
        )
    if not on_gpu and nprocs > max(1, cpu_count):
        raise SpecError(
            "resources.processes_per_node",
            f"{nprocs} processes, but this machine has {cpu_count} CPU core(s)",
            hint=f"use at most {max(1, cpu_count)}, or train on a cloud provider "
            "with resources.nodes/accelerator",
        )
    params = estimate_parameters(spec, info)
    need = params * TRAIN_BYTES_PER_PARAMETER * (nprocs if not on_gpu else 1)
    if memory_bytes > 0 and need > memory_bytes:
        raise SpecError(
            _largest_model_field(spec),
            f"the model has about {_human(params)} parameters, which need about "
            f"{_bytes(need)} to train; this machine has {_bytes(memory_bytes)}"
            + (" per GPU" if on_gpu else ""),
            hint="make the model smaller, or train on a cloud provider with a "
            "larger resources.accelerator",
        )


def machine_facts() -> dict[str, int]:
    """This machine's ``cpu_count``, ``memory_bytes`` (RAM) and ``gpu_count``,
    as keywords for :func:`check_local_resources` — without importing torch.

    GPUs are the NVIDIA devices the driver lists, narrowed by
    ``CUDA_VISIBLE_DEVICES``; ``memory_bytes`` is 0 (no memory check) where
    the OS does not say.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    try:
        memory = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        memory = 0
    gpus = 0
    driver = Path("/proc/driver/nvidia/gpus")
    try:
        gpus = sum(1 for _ in driver.iterdir()) if driver.is_dir() else 0
    except OSError:
        gpus = 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        listed = [v for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        gpus = min(gpus, len(listed))
    return {
        "cpu_count": cpus or os.cpu_count() or 1,
        "memory_bytes": max(memory, 0),
        "gpu_count": gpus,
    }


def _human(n: int) -> str:
    for unit, size in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _bytes(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"
