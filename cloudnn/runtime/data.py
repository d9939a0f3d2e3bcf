"""Data loading and preprocessing (numpy only; no torch).

Files become :class:`RawData` (features + raw labels + groups), a
:class:`Preprocessor` is fitted on the TRAIN split only (normalisation,
imputation, vocabulary) and applied to every split, and saved with the model
(``preprocess.json``) so serving turns raw requests into exactly the arrays the
model was trained on.

Formats: CSV, Parquet (pyarrow, imported lazily), NPZ (``x``/``y``/``groups``),
image folders (``root/<class>/*.png``; Pillow or matplotlib, imported lazily),
and text columns tokenised into word ids (0 = padding, 1 = unknown word).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cloudnn.errors import SpecError

if TYPE_CHECKING:
    from cloudnn.spec import DataSpec

__all__ = [
    "PAD",
    "UNK",
    "Dataset",
    "Preprocessor",
    "RawData",
    "load_datasets",
    "load_labeled",
    "read_raw",
    "split_indices",
    "tokenize",
]

PAD, UNK = 0, 1
#: words: runs of word characters, keeping inner apostrophes ("don't")
TOKEN_PATTERN = r"\w+(?:'\w+)*"
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma


@dataclass
class Dataset:
    """Model-ready arrays: x (float32, or int64 token ids), y, optional groups.

    ``y`` is int64 class indices (classification) or float32 ``(N,)`` /
    ``(N, K)`` targets (regression).
    """

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class RawData:
    """Features before preprocessing: a float array, or texts for text data."""

    features: Any  # np.ndarray (N, ...) float64, or list[str] for text
    labels: list[Any] | np.ndarray
    groups: np.ndarray | None
    feature_names: list[str] | None
    kind: str  # tabular | image | sequence | text

    def __len__(self) -> int:
        return len(self.features)

    def take(self, idx: np.ndarray) -> RawData:
        """The rows ``idx`` (in that order)."""
        feats = (
            [self.features[i] for i in idx]
            if isinstance(self.features, list)
            else self.features[idx]
        )
        labels = (
            self.labels[idx]
            if isinstance(self.labels, np.ndarray)
            else [self.labels[i] for i in idx]
        )
        groups = None if self.groups is None else self.groups[idx]
        return RawData(feats, labels, groups, self.feature_names, self.kind)


# ----------------------------------------------------------------- reading


def _infer_format(path: Path, fmt: str, where: str) -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir():
        files = [p for p in path.iterdir() if not p.name.startswith(".")]
        if any(p.is_dir() for p in files):
            return "images"
        for ext, name in (
            (".csv", "csv"),
            (".tsv", "csv"),
            (".parquet", "parquet"),
            (".npz", "npz"),
        ):
            if any(p.suffix.lower() == ext for p in files):
                return name
        raise SpecError(
            "data.format",
            f"cannot tell the format of folder {path} ({where})",
            hint="set data.format: csv | npz | parquet | images",
        )
    return {
        ".parquet": "parquet",
        ".pq": "parquet",
        ".npz": "npz",
    }.get(path.suffix.lower(), "csv")


def _single_file(path: Path, exts: tuple[str, ...], where: str) -> Path:
    """A directory channel holding one data file (SageMaker-style) -> that file."""
    if path.is_file():
        return path
    if not path.exists():
        raise SpecError(
            where, f"no such file or directory: {path}", hint="fix the path"
        )
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in exts)
    if not files:
        raise SpecError(
            where,
            f"no {'/'.join(exts)} file in {path}",
            hint="check the path or set data.format",
        )
    return files[0]


def _read_table(
    path: Path, fmt: str, where: str
) -> tuple[list[str], dict[str, list[Any]]]:
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise SpecError(
                "data.format",
                "reading Parquet needs pyarrow, which is not installed",
                hint='pip install "cloudnn[parquet]"',
            ) from exc
        table = pq.read_table(_single_file(path, (".parquet", ".pq"), where))
        if table.num_rows == 0:
            raise SpecError(where, f"{path.name} has no rows", hint="add data rows")
        return list(table.column_names), {
            c: table.column(c).to_pylist() for c in table.column_names
        }
    file = _single_file(path, (".csv", ".tsv"), where)
    with open(file, newline="", encoding="utf-8-sig") as fh:
        sample = fh.read(4096)
        fh.seek(0)
        tab = file.suffix.lower() == ".tsv" or ("\t" in sample and "," not in sample)
        reader = csv.reader(fh, delimiter="\t" if tab else ",")
        header = next(reader, None)
        if not header:
            raise SpecError(
                where, f"{file.name} is empty", hint="give a CSV with a header row"
            )
        header = [h.strip() for h in header]
        columns: dict[str, list[Any]] = {h: [] for h in header}
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise SpecError(
                    where,
                    f"{file.name} line {lineno} has {len(row)} fields, "
                    f"the header has {len(header)}",
                    hint="fix the CSV (quote fields that contain commas)",
                )
            for h, v in zip(header, row, strict=True):
                columns[h].append(v)
    if not columns[header[0]]:
        raise SpecError(
            where, f"{file.name} has a header but no rows", hint="add data rows"
        )
    return header, columns


def _to_float(values: list[Any], column: str) -> np.ndarray:
    try:
        # fast path: numbers or numeric strings ("" and None fall through)
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        pass
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, str) and not v.strip()):
            out[i] = np.nan  # imputed later with the train mean
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            raise SpecError(
                "data.features",
                f"column {column!r} is not numeric (value {v!r} in row {i + 1})",
                hint="list only numeric columns in data.features, "
                "or use data.text for a text column",
            ) from None
    return out


def _label_values(values: Sequence[Any] | np.ndarray) -> list[Any]:
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


def _regression_targets(labels: Sequence[Any] | np.ndarray) -> np.ndarray:
    try:
        y = np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError):
        bad = next((v for v in labels if not _is_number(v)), None)  # the first offender
        raise SpecError(
            "data.target",
            f"regression targets must be numbers, got {bad!r}",
            hint="check data.target, or use task: classification for labels",
        ) from None
    if not np.isfinite(y).all():
        raise SpecError(
            "data.target",
            f"{int((~np.isfinite(y)).sum())} regression target(s) are missing or "
            "not finite",
            hint="drop the rows without a target value",
        )
    return y


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def read_raw(path: str | Path, data: DataSpec, *, where: str = "data.train") -> RawData:
    """Read one data file/folder into :class:`RawData` following ``data``.

    ``where`` is the spec field that named ``path`` (used in error messages).
    """
    p = Path(path).expanduser()
    fmt = _infer_format(p, data.format, where)
    if fmt == "npz":
        return _read_npz(_single_file(p, (".npz",), where), data, where)
    if fmt == "images":
        if not p.is_dir():
            raise SpecError(
                where,
                f"{p} is not a folder of class folders",
                hint="point it at root/ holding root/<class>/*.png",
            )
        return _read_images(p, data, where)
    header, cols = _read_table(p, fmt, where)
    target = data.target or header[-1]
    if target not in cols:
        raise SpecError(
            "data.target",
            f"no column {target!r} in {p.name} (columns: {', '.join(header[:12])}"
            + (", ..." if len(header) > 12 else "")
            + ")",
            hint="set data.target to the label column",
        )
    groups = None
    if data.group_column:
        if data.group_column not in cols:
            raise SpecError(
                "data.group_column",
                f"no column {data.group_column!r} in {p.name}",
                hint="set data.group_column to an existing column",
            )
        groups = np.asarray([str(v) for v in cols[data.group_column]], dtype=object)
    labels = cols[target]
    if data.text is not None:
        if data.text.column not in cols:
            raise SpecError(
                "data.text.column",
                f"no column {data.text.column!r} in {p.name}",
                hint="set data.text.column to the text column",
            )
        texts = ["" if v is None else str(v) for v in cols[data.text.column]]
        return RawData(texts, labels, groups, [data.text.column], "text")
    names = data.features or [h for h in header if h not in (target, data.group_column)]
    missing = [n for n in names if n not in cols]
    if missing:
        raise SpecError(
            "data.features",
            f"no column(s) {', '.join(map(repr, missing))} in {p.name}",
            hint="list existing columns in data.features",
        )
    if not names:
        raise SpecError(
            "data.features",
            "no feature columns left besides the target",
            hint="add feature columns to the file",
        )
    feats = np.stack([_to_float(cols[n], n) for n in names], axis=1)
    return RawData(feats, labels, groups, list(names), "tabular")


def _read_npz(path: Path, data: DataSpec, where: str) -> RawData:
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SpecError(
            where,
            f"cannot read {path.name} as .npz: {exc}".splitlines()[0],
            hint="save it with np.savez(path, x=..., y=...)",
        ) from None
    with z:
        xkey = "x" if "x" in z else ("X" if "X" in z else None)
        ykey = data.target or ("y" if "y" in z else ("Y" if "Y" in z else None))
        if xkey is None or ykey is None or ykey not in z:
            raise SpecError(
                "data.target" if data.target else where,
                f"{path.name} needs arrays 'x' and "
                f"{ykey or 'y'!r} (it has: {', '.join(z.files) or 'none'})",
                hint="save with np.savez(path, x=..., y=...) or set data.target "
                "to the label key",
            )
        try:
            x = np.asarray(z[xkey], dtype=np.float64)
        except (TypeError, ValueError):
            raise SpecError(
                where,
                f"{path.name}: x must be numeric, got dtype {z[xkey].dtype}",
                hint="store features as numbers",
            ) from None
        y = np.asarray(z[ykey])
        groups = (
            np.asarray(z["groups"]).astype(str).astype(object)
            if "groups" in z
            else None
        )
    if len(x) == 0:
        raise SpecError(where, f"{path.name}: x has no rows", hint="add data")
    if len(x) != len(y) or (groups is not None and len(groups) != len(x)):
        raise SpecError(
            where,
            f"{path.name}: x has {len(x)} rows, y has {len(y)}"
            + (f", groups has {len(groups)}" if groups is not None else ""),
            hint="give every array one entry per example",
        )
    kind = {2: "tabular", 3: "sequence", 4: "image"}.get(x.ndim)
    if kind is None:
        raise SpecError(
            where,
            f"{path.name}: x must be 2-D (rows), 3-D (sequences) or 4-D (images "
            f"N, C, H, W), got {x.ndim}-D",
            hint="reshape x",
        )
    names = [f"x{i}" for i in range(x.shape[1])] if kind == "tabular" else None
    return RawData(x, y, groups, names, kind)


# ------------------------------------------------------------------ images


def _decode_image_file(path: Path) -> np.ndarray:
    """(H, W) or (H, W, C) pixels as stored (uint8, or floats in [0, 1])."""
    try:
        from PIL import Image
    except ImportError:  # matplotlib reads PNG itself; other formats need Pillow
        import matplotlib.image as mpimg

        return np.asarray(mpimg.imread(path))
    with Image.open(path) as im:
        mode = im.mode
        if mode in ("1", "L", "LA", "I", "I;16", "F"):
            return np.asarray(im.convert("L"))
        if mode != "RGB":
            return np.asarray(im.convert("RGB"))  # palette, RGBA, CMYK: drop alpha
        return np.asarray(im)


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (H, W, C) to ``size``: box-average big reductions, then bilinear.

    Plain numpy, so training and serving resize identically without Pillow.
    """
    h, w = int(size[0]), int(size[1])
    fy, fx = img.shape[0] // h, img.shape[1] // w
    if fy > 1 or fx > 1:  # anti-alias: average fy x fx blocks first
        fy, fx = max(fy, 1), max(fx, 1)
        hh, ww = img.shape[0] // fy * fy, img.shape[1] // fx * fx
        img = img[:hh, :ww].reshape(hh // fy, fy, ww // fx, fx, -1).mean(axis=(1, 3))
    if img.shape[:2] == (h, w):
        return img

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), pos - lo

    y0, y1, wy = axis(img.shape[0], h)
    x0, x1, wx = axis(img.shape[1], w)
    rows = img[y0] * (1 - wy)[:, None, None] + img[y1] * wy[:, None, None]
    return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


def _image_to_chw(
    img: np.ndarray,
    *,
    size: tuple[int, int] | None,
    gray: bool,
    channels: int | None = None,
) -> np.ndarray:
    """Decoded pixels (H, W[, C]) -> float64 (C, H, W) in [0, 1].

    Integer pixels are bytes (0-255); alpha is dropped; ``gray`` converts RGB
    to luma; ``channels`` (1 or 3) makes the channel count match training.
    """
    if img.dtype.kind in "ui":
        top = float(np.iinfo(img.dtype).max) if img.dtype.kind == "u" else 255.0
        top = 255.0 if img.dtype.itemsize > 1 and img.max(initial=0) <= 255 else top
        x = img.astype(np.float64) / top
    else:
        x = img.astype(np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[2] not in (1, 2, 3, 4):
        raise ValueError(
            f"expected an image of shape (H, W) or (H, W, C), got {list(img.shape)}"
        )
    x = x[:, :, :3] if x.shape[2] >= 3 else x[:, :, :1]  # drop alpha
    if (gray or channels == 1) and x.shape[2] == 3:
        x = (x @ _GRAY_WEIGHTS)[:, :, None]
    if channels == 3 and x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    if size is not None and x.shape[:2] != tuple(size):
        x = _resize(x, size)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def _read_images(root: Path, data: DataSpec, where: str) -> RawData:
    classes = sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    decoded: list[np.ndarray] = []
    labels: list[str] = []
    size = tuple(data.image_size) if data.image_size else None
    for cdir in classes:
        for f in sorted(cdir.iterdir()):
            if f.suffix.lower() in _IMAGE_EXT:
                try:
                    decoded.append(_decode_image_file(f))
                except Exception as exc:  # any decoder error: name the file
                    raise SpecError(
                        where,
                        f"cannot read image {f}: {exc}".splitlines()[0],
                        hint="remove or re-save the file",
                    ) from None
                labels.append(cdir.name)
    if not decoded:
        raise SpecError(
            where,
            f"no images under {root} (expected {root.name}/<class>/*.png)",
            hint="put one folder per class with .png/.jpg files in it",
        )
    # a folder mixing gray and colour images is read as colour throughout
    colour = not data.grayscale and any(
        d.ndim == 3 and d.shape[2] >= 3 for d in decoded
    )
    channels = 3 if colour else 1
    images = [
        _image_to_chw(d, size=size, gray=data.grayscale, channels=channels)  # type: ignore[arg-type]
        for d in decoded
    ]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise SpecError(
            "data.image_size",
            f"images have different sizes, e.g. {sorted(shapes)[:3]}",
            hint="set data.image_size: [H, W] to resize them",
        )
    return RawData(np.stack(images), labels, None, None, "image")


# ----------------------------------------------------------- preprocessing


def tokenize(
    text: str, lowercase: bool = True, pattern: str = TOKEN_PATTERN
) -> list[str]:
    """Words of ``text`` (runs of word characters), lowercased by default."""
    return re.findall(pattern, text.lower() if lowercase else text)


@dataclass
class Preprocessor:
    """Everything that turns raw inputs into model inputs; saved as preprocess.json.

    ``shift``/``scale`` are the normalisation statistics, subtracted and
    divided per feature (tabular), per channel (images) or per feature over
    all timesteps (sequences): the train mean/std for ``normalize: standard``,
    the train min/range for ``minmax``.
    """

    kind: str  # tabular | image | sequence | text
    task: str  # classification | regression
    input_shape: tuple[int, ...]  # per-sample shape the model sees
    feature_names: list[str] | None = None
    normalize: str = "none"
    shift: list[float] | None = None  # subtracted (mean or min)
    scale: list[float] | None = None  # divided by (std or max - min)
    fill: list[float] | None = None  # imputation value per feature (train mean)
    classes: list[Any] | None = None  # original labels, in class-index order
    target: str | None = None
    target_width: int = 1  # regression outputs
    text_column: str | None = None
    vocab: dict[str, int] | None = None  # word -> id; 0 padding, 1 unknown
    max_length: int | None = None
    lowercase: bool = True
    token_pattern: str = TOKEN_PATTERN
    image_size: tuple[int, int] | None = None
    grayscale: bool = False
    image_files: bool = False  # trained on image files: serving decodes alike
    raw_shape: tuple[int, ...] | None = None  # per-row shape before reshape
    extra: dict[str, Any] = field(default_factory=dict)

    # -- fitting -------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        raw: RawData,
        data: DataSpec,
        task: str,
        *,
        input_shape: tuple[int, ...] | None = None,
        all_labels: Sequence[Any] | None = None,
        image_files: bool = False,
    ) -> Preprocessor:
        """Fit statistics on the TRAIN split ``raw``.

        ``all_labels`` (the training file's labels, before the split) fixes
        the class list, so a rare class a split left out of train still has
        an index.
        """
        pre = cls(
            kind=raw.kind,
            task=task,
            input_shape=(),
            feature_names=raw.feature_names,
            normalize=data.normalize,
            target=data.target,
            image_size=tuple(data.image_size) if data.image_size else None,  # type: ignore[arg-type]
            grayscale=data.grayscale,
            image_files=image_files,
        )
        if task == "classification":
            labels = _label_values(all_labels if all_labels is not None else raw.labels)
            uniq = sorted(set(labels), key=lambda v: (isinstance(v, str), v))
            if len(uniq) < 2:
                raise SpecError(
                    "data.target",
                    f"the label column has {len(uniq)} distinct value(s) "
                    f"({', '.join(map(repr, uniq[:1]))}); classification needs 2+",
                    hint="check data.target, or use task: regression",
                )
            pre.classes = uniq
        else:
            y = _regression_targets(raw.labels)
            pre.target_width = 1 if y.ndim == 1 else int(np.prod(y.shape[1:]))
        if raw.kind == "text":
            assert data.text is not None
            t = data.text
            pre.text_column, pre.max_length, pre.lowercase = (
                t.column,
                t.max_length,
                t.lowercase,
            )
            counts = Counter(
                tok for text in raw.features for tok in tokenize(text, t.lowercase)
            )
            # most frequent first; ties alphabetical so the vocab never depends
            # on row order
            ranked = sorted(
                (w for w, c in counts.items() if c >= t.min_freq),
                key=lambda w: (-counts[w], w),
            )
            pre.vocab = {w: i + 2 for i, w in enumerate(ranked[: t.vocab_size - 2])}
            pre.input_shape = (t.max_length,)
            pre.normalize = "none"
            return pre
        x = np.asarray(raw.features, dtype=np.float64)
        pre.raw_shape = tuple(int(d) for d in x.shape[1:])
        axes = pre._stat_axes()
        with np.errstate(all="ignore"):
            mean = np.nanmean(x, axis=axes)
        mean = np.where(np.isnan(mean), 0.0, mean)  # an all-missing column
        pre.fill = mean.tolist()
        x = _impute(x, mean, raw.kind)
        if data.normalize == "standard":
            std = x.std(axis=axes)
            pre.shift = mean.tolist()
            pre.scale = np.where(std > 1e-12, std, 1.0).tolist()  # constant columns
        elif data.normalize == "minmax":
            lo, hi = x.min(axis=axes), x.max(axis=axes)
            pre.shift = lo.tolist()
            pre.scale = np.where(hi - lo > 1e-12, hi - lo, 1.0).tolist()
        pre.input_shape = pre._model_shape(input_shape)
        return pre

    def _stat_axes(self) -> tuple[int, ...]:
        if self.kind == "image":
            return (0, 2, 3)  # per channel
        if self.kind == "sequence":
            return (0, 1)  # per feature over all timesteps
        return (0,)

    def _model_shape(self, input_shape: tuple[int, ...] | None) -> tuple[int, ...]:
        assert self.raw_shape is not None
        if input_shape is None:
            return self.raw_shape
        want = tuple(int(d) for d in input_shape)
        have = math.prod(self.raw_shape)
        if self.kind == "image" and want != self.raw_shape:
            raise SpecError(
                "model.input_shape",
                f"{list(want)} does not match the images, which are "
                f"{list(self.raw_shape)} (C, H, W)",
                hint=f"set model.input_shape: {list(self.raw_shape)}, or data."
                "image_size: [H, W] (and data.grayscale for 1 channel) to resize",
            )
        if math.prod(want) != have:
            raise SpecError(
                "model.input_shape",
                f"{list(want)} holds {math.prod(want)} values, the data has "
                f"{have} per row",
                hint="make the product of input_shape equal the number of features, "
                f"e.g. [1, {have}, 1]"
                + (
                    f" or [1, {math.isqrt(have)}, {math.isqrt(have)}]"
                    if math.isqrt(have) ** 2 == have
                    else ""
                ),
            )
        return want

    # -- applying ----------------------------------------------------------

    @property
    def num_outputs(self) -> int:
        """Number of classes, or the regression target width."""
        return len(self.classes) if self.classes is not None else self.target_width

    def encode_labels(self, labels: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Raw labels -> int64 class indices, or float32 regression targets."""
        if self.task != "classification":
            return _regression_targets(labels).astype(np.float32)
        assert self.classes is not None
        index = {c: i for i, c in enumerate(self.classes)}
        out = np.empty(len(labels), dtype=np.int64)
        for i, v in enumerate(_label_values(labels)):
            if v not in index:
                raise SpecError(
                    "data.target",
                    f"label {v!r} does not occur in the training data "
                    f"(classes: {', '.join(map(repr, self.classes[:10]))}"
                    + (", ..." if len(self.classes) > 10 else "")
                    + ")",
                    hint="every label must occur in the training file",
                )
            out[i] = index[v]
        return out

    def decode(self, indices: Sequence[int] | np.ndarray) -> list[Any]:
        """Class indices -> original labels (e.g. ``[1, 0] -> ["dog", "cat"]``)."""
        if self.classes is None:
            raise ValueError("decode() needs a classification preprocessor")
        n = len(self.classes)
        out = []
        for i in np.asarray(indices).reshape(-1).tolist():
            if not 0 <= int(i) < n:
                raise ValueError(f"class index {i} is out of range (0..{n - 1})")
            out.append(self.classes[int(i)])
        return out

    def apply(self, raw: RawData) -> Dataset:
        """Preprocess a labelled :class:`RawData` with the fitted statistics."""
        x = self._features(raw.features)
        return Dataset(x, self.encode_labels(raw.labels), raw.groups)

    def _features(self, feats: Any) -> np.ndarray:
        if self.kind == "text":
            return self._encode_texts(list(feats))
        x = np.asarray(feats, dtype=np.float64)
        assert self.raw_shape is not None
        if x.shape[1:] != self.raw_shape:
            # flat rows for (C, H, W) models, or (N, 1, 8, 8) for 64 features
            if x.ndim >= 2 and math.prod(x.shape[1:]) == math.prod(self.raw_shape):
                x = x.reshape(len(x), *self.raw_shape)
            else:
                raise ValueError(self._shape_message(x.shape[1:]))
        if self.fill is not None:
            x = _impute(x, np.asarray(self.fill), self.kind)
        if self.shift is not None and self.scale is not None:
            shift, scale = np.asarray(self.shift), np.asarray(self.scale)
            if self.kind == "image":
                shift, scale = shift[:, None, None], scale[:, None, None]
            x = (x - shift) / scale
        return np.ascontiguousarray(
            x.reshape(len(x), *self.input_shape), dtype=np.float32
        )

    def _shape_message(self, got: tuple[int, ...]) -> str:
        assert self.raw_shape is not None
        if self.kind == "tabular":
            n = math.prod(got) if got else 1
            return f"expected {self.raw_shape[0]} features per instance, got {n}"
        what = {"image": " (C, H, W)", "sequence": " (timesteps, features)"}
        return (
            f"expected instances of shape {list(self.raw_shape)}"
            f"{what.get(self.kind, '')}, got {list(got)}"
        )

    def _encode_texts(self, texts: list[Any]) -> np.ndarray:
        assert self.vocab is not None and self.max_length is not None
        out = np.zeros((len(texts), self.max_length), dtype=np.int64)
        for i, t in enumerate(texts):
            if isinstance(t, dict):
                if self.text_column not in t:
                    raise ValueError(
                        f"instance {i} has no {self.text_column!r} key "
                        f"(got {', '.join(map(str, list(t)[:5]))})"
                    )
                t = t[self.text_column]
            if not isinstance(t, str):
                raise ValueError(
                    f"expected a string per instance, got {type(t).__name__}"
                )
            ids = [
                self.vocab.get(w, UNK)
                for w in tokenize(t, self.lowercase, self.token_pattern)
            ][: self.max_length]
            out[i, : len(ids)] = ids  # right padding with PAD = 0
        return out

    def _image_instance(self, item: Any) -> np.ndarray:
        """One image instance -> (C, H, W) in the training layout."""
        assert self.raw_shape is not None
        try:
            arr = np.asarray(item)
            if arr.dtype.kind not in "uif":
                arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError("image instances must be nested lists of numbers") from exc
        c, h, w = self.raw_shape
        if arr.shape == self.raw_shape:  # already (C, H, W)
            if self.image_files and arr.dtype.kind in "ui" and arr.max(initial=0) > 1:
                return arr.astype(np.float64) / 255.0
            return arr.astype(np.float64)
        channel_last = arr.ndim == 3 and arr.shape[2] in (1, 2, 3, 4)
        if self.image_files and (arr.ndim == 2 or channel_last):
            # a decoded image (H, W[, C]): convert and resize as the files were
            size = (h, w) if self.image_size is not None else None
            try:
                out = _image_to_chw(arr, size=size, gray=self.grayscale, channels=c)
            except ValueError:
                raise ValueError(self._shape_message(arr.shape)) from None
        elif arr.shape == (h, w, c):
            out = arr.astype(np.float64).transpose(2, 0, 1)
        elif c == 1 and arr.shape == (h, w):
            out = arr.astype(np.float64)[None]
        else:
            raise ValueError(self._shape_message(arr.shape))
        if out.shape != self.raw_shape:
            raise ValueError(self._shape_message(arr.shape))
        return out

    def transform(self, instances: Any) -> np.ndarray:
        """Raw request instances -> model input (what serving calls).

        Accepts a numpy array, a list of feature lists, a list of dicts keyed by
        feature name (tabular), strings or ``{text_column: str}`` (text), or
        nested lists (images as (C, H, W) or (H, W, C); sequences as (T, F)).
        One flat list of numbers is one tabular instance. Raises ``ValueError``
        with a one-line reason on anything else.
        """
        if isinstance(instances, np.ndarray):
            items: Any = list(instances) if instances.dtype == object else instances
        elif isinstance(instances, list | tuple):
            items = list(instances)
        else:
            raise ValueError(
                f"expected a list of instances, got {type(instances).__name__}"
            )
        if len(items) == 0:
            raise ValueError("no instances given")
        if self.kind == "text":
            return self._encode_texts(list(items))
        if self.kind == "image":
            x = np.stack([self._image_instance(it) for it in items])
        else:
            if isinstance(items, list) and any(isinstance(d, dict) for d in items):
                items = [self._from_dict(d) for d in items]
            try:
                x = np.asarray(items, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    "instances must be numbers of one consistent shape"
                    + (
                        f" ({self._shape_message(())})"
                        if self.kind == "tabular"
                        else ""
                    )
                ) from exc
            if x.ndim == 1 and self.kind == "tabular" and self.raw_shape == (len(x),):
                x = x[None, :]  # one flat instance
            if x.ndim < 2:
                raise ValueError(
                    self._shape_message(())
                    if self.kind != "tabular"
                    else f"expected a list of instances with {self.raw_shape[0]} "  # type: ignore[index]
                    f"features each, got {len(x)} numbers"
                )
        if not np.all(np.isfinite(x)):
            raise ValueError("instances contain NaN or infinite values")
        return self._features(x)

    def _from_dict(self, row: Any) -> list[float]:
        if not isinstance(row, dict):
            raise ValueError("mix of dict and non-dict instances")
        names = self.feature_names or []
        missing = [n for n in names if n not in row]
        if missing:
            raise ValueError(
                f"instance is missing feature(s) {', '.join(missing[:5])}"
                + (" ..." if len(missing) > 5 else "")
            )
        try:
            return [float(row[n]) for n in names]
        except (TypeError, ValueError) as exc:
            raise ValueError("feature values must be numbers") from exc

    # -- persistence ---------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able mapping (tuples become lists)."""
        d = asdict(self)
        d["format"] = 1
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        """Inverse of :meth:`to_dict`; unknown keys (newer writers) are ignored."""
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        for key in ("input_shape", "raw_shape", "image_size"):
            if d.get(key) is not None:
                d[key] = tuple(int(v) for v in d[key])
        return cls(**d)

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/preprocess.json``; returns its path."""
        path = Path(directory) / "preprocess.json"
        path.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Preprocessor:
        """Read ``directory/preprocess.json`` (or that file itself)."""
        path = Path(directory)
        if path.is_dir():
            path = path / "preprocess.json"
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


def _impute(x: np.ndarray, fill: np.ndarray, kind: str) -> np.ndarray:
    if not np.isnan(x).any():
        return x
    if kind == "tabular":
        x = x.copy()
        rows, cols = np.where(np.isnan(x))
        x[rows, cols] = fill[cols]
        return x
    if kind == "image":
        return np.where(np.isnan(x), fill[None, :, None, None], x)
    return np.where(np.isnan(x), fill[None, None, :], x)


# ------------------------------------------------------------------- splits


def split_indices(
    labels: Sequence[Any] | np.ndarray,
    *,
    validation: float,
    test: float,
    seed: int,
    stratify: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic, disjoint (train, validation, test) sorted index arrays.

    With ``stratify`` each label is split separately, so every split keeps
    the label proportions (to within one example per class).
    """
    n = len(labels)
    rng = np.random.default_rng(seed)
    if stratify:
        buckets_by_label: dict[str, list[int]] = {}
        for i, v in enumerate(_label_values(labels)):
            buckets_by_label.setdefault(repr(v), []).append(i)
        buckets = [np.asarray(buckets_by_label[k]) for k in sorted(buckets_by_label)]
    else:
        buckets = [np.arange(n)]
    tr: list[np.ndarray] = []
    va: list[np.ndarray] = []
    te: list[np.ndarray] = []
    for idx in buckets:
        idx = rng.permutation(idx)
        n_test = int(math.floor(len(idx) * test + 0.5))
        n_val = int(math.floor(len(idx) * validation + 0.5))
        te.append(idx[:n_test])
        va.append(idx[n_test : n_test + n_val])
        tr.append(idx[n_test + n_val :])
    return tuple(np.sort(np.concatenate(a)).astype(np.int64) for a in (tr, va, te))  # type: ignore[return-value]


def load_datasets(
    data: DataSpec,
    task: str,
    *,
    seed: int | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> tuple[Dataset, Dataset, Dataset, Preprocessor]:
    """Train/validation/test datasets and the preprocessor fitted on train.

    ``data.validation``/``data.test`` files are used when given; otherwise
    ``data.train`` is split by ``data.split`` (``seed`` overrides its seed).
    ``input_shape`` (a CNN's (C, H, W)) reshapes flat feature rows.
    """
    train_raw = read_raw(data.train, data, where="data.train")
    train_path = Path(data.train).expanduser()
    image_files = _infer_format(train_path, data.format, "data.train") == "images"
    val_raw = (
        read_raw(data.validation, data, where="data.validation")
        if data.validation
        else None
    )
    test_raw = read_raw(data.test, data, where="data.test") if data.test else None
    for other, where in ((val_raw, "data.validation"), (test_raw, "data.test")):
        if other is not None and other.kind != train_raw.kind:
            raise SpecError(
                where,
                f"holds {other.kind} data, data.train holds {train_raw.kind} data",
                hint="give every split in the same format",
            )
    split_seed = data.split.seed if seed is None else seed
    classification = task == "classification"
    all_labels = _label_values(train_raw.labels) if classification else None
    if val_raw is None or test_raw is None:
        tr, va, te = split_indices(
            train_raw.labels,
            validation=0.0 if val_raw is not None else data.split.validation,
            test=0.0 if test_raw is not None else data.split.test,
            seed=split_seed,
            stratify=data.split.stratify and classification,
        )
        full = train_raw
        train_raw = full.take(tr)
        if val_raw is None:
            val_raw = full.take(va)
        if test_raw is None:
            test_raw = full.take(te)
    if len(train_raw) == 0:
        raise SpecError(
            "data.split",
            "the training split is empty",
            hint="add data or lower data.split.validation / data.split.test",
        )
    pre = Preprocessor.fit(
        train_raw,
        data,
        task,
        input_shape=input_shape,
        all_labels=all_labels,
        image_files=image_files,
    )
    return pre.apply(train_raw), pre.apply(val_raw), pre.apply(test_raw), pre


def load_labeled(path: str | Path, data: DataSpec, pre: Preprocessor) -> Dataset:
    """A labelled file in the training format, preprocessed with a fitted ``pre``."""
    return pre.apply(read_raw(path, data, where="data.test"))
