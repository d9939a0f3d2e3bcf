"""Data loading and preprocessing (numpy only; no torch).

Files become :class:`RawData` (features + raw labels + groups), a
:class:`Preprocessor` is fitted on the TRAIN split only (normalisation,
imputation, vocabulary) and applied to every split, and saved with the model
(``preprocess.json``) so serving turns raw requests into exactly the arrays the
model was trained on.

Formats: CSV, Parquet (pyarrow, imported lazily), NPZ (``x``/``y``/``groups``),
image folders (``root/<class>/*.png``; Pillow or matplotlib, imported lazily),
and text columns tokenised into word ids (0 = padding, 1 = unknown word).

Every check of the files themselves (headers, keys, shapes, dtypes, labels,
columns lined up by name) lives in :mod:`cloudnn.datacheck`, which
``cloudnn validate``/``train`` run before a job exists; the loader calls the
same functions, so remote data seen only by the job is refused alike.
Blank cells (CSV ``""``, Parquet null) are imputed with the training mean and
counted; NaN or infinite values anywhere are refused.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cloudnn.datacheck import (
    TOKEN_PATTERN,
    Reference,
    check_class_count,
    check_finite,
    check_image_classes,
    check_image_sizes,
    check_known_labels,
    check_labels,
    check_same_layout,
    decode_image_file,
    image_classes,
    infer_format,
    is_blank,
    label_values,
    model_input_shape,
    npz_layout,
    npz_members,
    numeric_column,
    plan_columns,
    read_table,
    regression_targets,
    single_file,
)
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
# TOKEN_PATTERN (shared with datacheck): words are runs of word characters,
# keeping inner apostrophes ("don't")
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma

# one name each: the loader and datacheck share these
_label_values = label_values
_regression_targets = regression_targets


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
    """Features before preprocessing: a float array, or texts for text data.

    Tabular features hold NaN where a cell was blank (imputed later).
    ``columns`` is the file's header (CSV/Parquet), ``target`` the label
    column or key actually used, ``source`` the file name for messages.
    """

    features: Any  # np.ndarray (N, ...) float64, or list[str] for text
    labels: list[Any] | np.ndarray
    groups: np.ndarray | None
    feature_names: list[str] | None
    kind: str  # tabular | image | sequence | text
    columns: list[str] | None = None
    target: str | None = None
    source: str = ""

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
        return RawData(
            feats,
            labels,
            groups,
            self.feature_names,
            self.kind,
            self.columns,
            self.target,
            self.source,
        )

    @property
    def row_shape(self) -> tuple[int, ...] | None:
        """Per-row shape of the features (None for text)."""
        if self.kind == "text":
            return None
        return tuple(int(d) for d in np.shape(self.features)[1:])

    def reference(
        self, labels: frozenset[Any] | None = None, *, source: str = "data.train"
    ) -> Reference:
        """This (training) data's layout, for lining up the other splits."""
        return Reference(
            kind=self.kind,
            feature_names=tuple(self.feature_names) if self.feature_names else None,
            columns=tuple(self.columns) if self.columns is not None else None,
            target=self.target,
            shape=self.row_shape,
            labels=labels,
            source=source,
        )


# ----------------------------------------------------------------- reading


def read_raw(
    path: str | Path,
    data: DataSpec,
    *,
    where: str = "data.train",
    task: str = "",
    reference: Reference | None = None,
) -> RawData:
    """Read one data file/folder into :class:`RawData` following ``data``.

    ``where`` is the spec field that named ``path`` (used in error messages).
    ``reference`` (data.train's layout) lines a validation/test file up with
    the training data: columns by name, the same row shape and kind.
    ``task`` enables the label checks that depend on it (NPZ label shapes).
    """
    p = Path(path).expanduser()
    fmt = infer_format(p, data.format, where)
    if fmt == "npz":
        file = single_file(p, (".npz",), where)
        return _read_npz(file, data, where, task=task, reference=reference)
    if fmt == "images":
        return _read_images(p, data, where, task=task, reference=reference)
    table = read_table(p, fmt, where)
    name = table.file.name
    plan = plan_columns(table.header, data, file=name, where=where, reference=reference)
    groups = None
    if plan.group:
        groups = np.asarray([str(v) for v in table.columns[plan.group]], dtype=object)
    labels = table.columns[plan.target]
    header, target = table.header, plan.target
    if plan.text is not None:
        texts = ["" if v is None else str(v) for v in table.columns[plan.text]]
        return RawData(texts, labels, groups, [plan.text], "text", header, target, name)
    feats = np.stack(
        [numeric_column(table.columns[n], n, file=name)[0] for n in plan.features],
        axis=1,
    )
    raw = RawData(
        feats, labels, groups, list(plan.features), "tabular", header, target, name
    )
    if reference is not None:
        check_same_layout("tabular", raw.row_shape, reference, file=name, where=where)
    return raw


def _read_npz(
    path: Path,
    data: DataSpec,
    where: str,
    *,
    task: str = "",
    reference: Reference | None = None,
) -> RawData:
    import zipfile

    layout = npz_layout(
        npz_members(path, where),
        data,
        task,
        file=path.name,
        where=where,
        reference=reference,
    )
    try:
        with np.load(path, allow_pickle=False) as z:
            x = np.asarray(z[layout.x], dtype=np.float64)
            y = np.asarray(z[layout.y])
            groups = (
                np.asarray(z[layout.groups]).astype(str).astype(object)
                if layout.groups
                else None
            )
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SpecError(
            where,
            f"cannot read {path.name} as .npz: {exc}".splitlines()[0],
            hint="save it with np.savez(path, x=..., y=...)",
        ) from None
    check_finite(x, what="x", file=path.name, where=where)
    names = [f"x{i}" for i in range(x.shape[1])] if layout.kind == "tabular" else None
    return RawData(x, y, groups, names, layout.kind, target=layout.y, source=path.name)


# ------------------------------------------------------------------ images


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


def _read_images(
    root: Path,
    data: DataSpec,
    where: str,
    *,
    task: str = "",
    reference: Reference | None = None,
) -> RawData:
    classes = image_classes(root, where)
    if reference is None and task:
        check_image_classes([c for c, _ in classes], task, root=root, where=where)
    decoded: list[np.ndarray] = []
    labels: list[str] = []
    sizes: dict[tuple[int, int], Path] = {}
    for name, files in classes:
        for f in files:
            try:
                img = decode_image_file(f)
            except Exception as exc:  # any decoder error: name the file
                raise SpecError(
                    where,
                    f"cannot read image {f}: {exc}".splitlines()[0],
                    hint="remove or re-save the file",
                ) from None
            decoded.append(img)
            sizes.setdefault((int(img.shape[0]), int(img.shape[1])), f)
            labels.append(name)
    check_image_sizes(sizes, data, where=where)
    size = tuple(data.image_size) if data.image_size else None
    if reference is not None and reference.shape is not None:
        channels = reference.shape[0]  # convert like the training images
    else:
        # a folder mixing gray and colour images is read as colour throughout
        colour = not data.grayscale and any(
            d.ndim == 3 and d.shape[2] >= 3 for d in decoded
        )
        channels = 3 if colour else 1
    images = [
        _image_to_chw(d, size=size, gray=data.grayscale, channels=channels)  # type: ignore[arg-type]
        for d in decoded
    ]
    raw = RawData(np.stack(images), labels, None, None, "image", source=root.name)
    if reference is not None:
        check_same_layout(
            "image", raw.row_shape, reference, file=str(root), where=where
        )
    return raw


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
    #: the training file's header (CSV/Parquet): other files and serving CSV
    #: bodies are lined up with it by column name
    columns: list[str] | None = None
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
            target=raw.target or data.target,
            columns=list(raw.columns) if raw.columns is not None else None,
            image_size=tuple(data.image_size) if data.image_size else None,  # type: ignore[arg-type]
            grayscale=data.grayscale,
            image_files=image_files,
        )
        if task == "classification":
            labels = _label_values(all_labels if all_labels is not None else raw.labels)
            check_class_count(labels, file=raw.source or "the training data")
            pre.classes = sorted(set(labels), key=lambda v: (isinstance(v, str), v))
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
        return model_input_shape(self.kind, self.raw_shape, input_shape)

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
            # rows as stored, as the model sees them ((1, 8, 8) for 64 pixel
            # columns) or flat (one CSV line): any other nesting of the same
            # number of values is a different instance, not a reshape away
            got = tuple(x.shape[1:])
            flat = (math.prod(self.raw_shape),)
            if x.ndim >= 2 and got in (tuple(self.input_shape), flat):
                x = x.reshape(len(x), *self.raw_shape)
            else:
                raise ValueError(self._shape_message(got))
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
            if len(got) > 1 and n == self.raw_shape[0]:
                return (
                    f"expected {self.raw_shape[0]} features per instance as a flat "
                    f"list, got values nested as {list(got)}"
                )
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
        One flat list of numbers is one tabular instance. A blank tabular
        value (``None``, ``""``) is imputed with the training mean, exactly as
        a blank cell of the training file was; NaN and infinity are refused.
        Raises ``ValueError`` with a one-line reason on anything else.
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
            blank: np.ndarray | None = None
            try:
                x = np.asarray(items, dtype=np.float64)  # None becomes NaN
                if not np.isfinite(x).all():
                    raise ValueError("not finite")
            except (TypeError, ValueError, OverflowError):
                x, blank = self._with_blanks(items)
            if x.ndim == 1 and self.kind == "tabular" and self.raw_shape == (len(x),):
                x = x[None, :]  # one flat instance
            if x.ndim < 2:
                raise ValueError(
                    self._shape_message(())
                    if self.kind != "tabular"
                    else f"expected a list of instances with {self.raw_shape[0]} "  # type: ignore[index]
                    f"features each, got {len(x)} numbers"
                )
            if blank is not None:
                x = np.where(blank.reshape(x.shape), np.nan, x)
                finite = np.isfinite(x) | blank.reshape(x.shape)
                if not finite.all():
                    raise ValueError("instances contain NaN or infinite values")
                return self._features(x)
        if not np.all(np.isfinite(x)):
            raise ValueError("instances contain NaN or infinite values")
        return self._features(x)

    def _with_blanks(self, items: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """(values, where a tabular value was blank) — blanks are imputed.

        Other kinds have no training statistic to impute with: their blanks
        are refused like NaN.
        """
        tabular = self.kind == "tabular"

        def cell(v: Any) -> tuple[Any, bool]:
            if tabular and is_blank(v):
                return 0.0, True
            return v, False

        values: list[Any] = []
        mask: list[Any] = []
        for item in items:
            if isinstance(item, list | tuple):
                pairs = [cell(v) for v in item]
                values.append([v for v, _ in pairs])
                mask.append([b for _, b in pairs])
            else:
                v, b = cell(item)
                values.append(v)
                mask.append(b)
        try:
            x = np.asarray(values, dtype=np.float64)
            blank = np.asarray(mask, dtype=bool)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(
                "instances must be numbers of one consistent shape"
                + (f" ({self._shape_message(())})" if tabular else "")
            ) from exc
        if blank.shape != x.shape:  # pragma: no cover - built side by side
            blank = np.zeros(x.shape, dtype=bool)
        if not tabular and np.isnan(x).any():
            raise ValueError(
                "instances contain NaN, infinite or missing values (missing "
                "values are imputed for tabular features only)"
            )
        return x, blank if blank.any() else None

    def align_columns(
        self, header: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> list[list[Any]]:
        """Rows under ``header`` -> rows of the training features, in training order.

        Columns are matched by name, in any order; the training file's other
        columns (label, groups) are dropped. A feature missing from the
        header, or a column the training data did not have, is refused with
        ``ValueError`` naming them. Models trained without column names (NPZ)
        take the rows as they are.
        """
        names = [str(h).strip() for h in header]
        features = list(self.feature_names or [])
        synthetic = features == [f"x{i}" for i in range(len(features))]
        if (
            self.kind != "tabular"
            or not features
            or (self.columns is None and synthetic)
        ):
            return [list(r) for r in rows]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"the header repeats column(s) {_quoted(repeated)}")
        missing = [n for n in features if n not in names]
        if missing:
            raise ValueError(
                f"the header lacks feature column(s) {_quoted(missing)} (the "
                f"model's features: {_quoted(features)}; matched by name)"
            )
        if self.columns is not None:
            unknown = [n for n in names if n not in self.columns]
            if unknown:
                raise ValueError(
                    f"the header has column(s) {_quoted(unknown)} that the "
                    f"training data did not have (its columns: "
                    f"{_quoted(self.columns)})"
                )
        index = [names.index(n) for n in features]
        out: list[list[Any]] = []
        for i, row in enumerate(rows):
            if len(row) != len(names):
                raise ValueError(
                    f"row {i} has {len(row)} values, the header has {len(names)}"
                )
            out.append([row[j] for j in index])
        return out

    def _from_dict(self, row: Any) -> list[Any]:
        if not isinstance(row, dict):
            raise ValueError("mix of dict and non-dict instances")
        names = self.feature_names or []
        missing = [n for n in names if n not in row]
        if missing:
            raise ValueError(
                f"instance is missing feature(s) {', '.join(missing[:5])}"
                + (" ..." if len(missing) > 5 else "")
            )
        if self.columns is not None:
            # as for a CSV header: a name the training data never had is a
            # mistake (a typo, another file's column), not something to drop
            unknown = [k for k in row if k not in self.columns and k not in names]
            if unknown:
                raise ValueError(
                    f"instance has key(s) {_quoted(unknown)} that the training "
                    f"data did not have (its columns: {_quoted(self.columns)})"
                )
        try:
            # a blank value stays None: imputed like a blank training cell
            return [None if is_blank(row[n]) else float(row[n]) for n in names]
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


def _quoted(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(map(repr, list(names)[:limit]))
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


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
    log: Callable[[str], None] | None = None,
) -> tuple[Dataset, Dataset, Dataset, Preprocessor]:
    """Train/validation/test datasets and the preprocessor fitted on train.

    ``data.validation``/``data.test`` files are used when given (their
    columns lined up with data.train's by name); otherwise ``data.train`` is
    split by ``data.split`` (``seed`` overrides its seed). ``input_shape`` (a
    CNN's (C, H, W)) reshapes flat feature rows. Blank cells are imputed with
    the train mean; how many is said through ``log`` (default: a ``log``
    event in the job's log) and kept in ``pre.extra["imputed"]``.
    """
    train_raw = read_raw(data.train, data, where="data.train", task=task)
    train_path = Path(data.train).expanduser()
    image_files = infer_format(train_path, data.format, "data.train") == "images"
    train_labels, _ = check_labels(
        train_raw.labels, task, file=train_raw.source or "data.train"
    )
    classification = task == "classification"
    if classification:
        check_class_count(train_labels, file=train_raw.source or "data.train")
    reference = train_raw.reference(train_labels if classification else None)
    others: dict[str, RawData | None] = {}
    for key in ("validation", "test"):
        path = getattr(data, key)
        others[key] = None
        if path:
            where = f"data.{key}"
            raw = read_raw(path, data, where=where, task=task, reference=reference)
            labels, _ = check_labels(raw.labels, task, file=raw.source or where)
            if classification:
                check_known_labels(labels, reference, file=raw.source or where)
            others[key] = raw
    val_raw, test_raw = others["validation"], others["test"]
    split_seed = data.split.seed if seed is None else seed
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
    imputed = _imputed(
        {"train": train_raw, "validation": val_raw, "test": test_raw}, pre
    )
    if imputed:
        pre.extra["imputed"] = imputed
        (log or _job_log)(
            f"imputed {imputed['cells']} blank cell(s) with the training mean "
            f"(train {imputed['train']}, validation {imputed['validation']}, "
            f"test {imputed['test']}; by column: "
            + ", ".join(f"{k} {v}" for k, v in imputed["columns"].items())
            + ")"
        )
    return pre.apply(train_raw), pre.apply(val_raw), pre.apply(test_raw), pre


def _imputed(splits: dict[str, RawData], pre: Preprocessor) -> dict[str, Any]:
    """Blank cells per split and per column ({} when there are none)."""
    if pre.kind != "tabular":
        return {}
    per_split: dict[str, int] = {}
    per_column = np.zeros(len(pre.feature_names or []), dtype=np.int64)
    for name, raw in splits.items():
        missing = np.isnan(np.asarray(raw.features, dtype=np.float64))
        per_split[name] = int(missing.sum())
        if missing.ndim == 2 and missing.shape[1] == len(per_column):
            per_column += missing.sum(axis=0)
    total = sum(per_split.values())
    if not total:
        return {}
    names = pre.feature_names or [f"x{i}" for i in range(len(per_column))]
    return {
        "cells": total,
        **per_split,
        "columns": {n: int(c) for n, c in zip(names, per_column, strict=True) if c},
    }


#: variables that say this process is a training job (local, SageMaker,
#: Vertex AI, Azure ML): only there is stdout the job's event log
_JOB_MARKERS = (
    "CLOUDNN_RUN_ID",
    "CLOUDNN_PLATFORM",
    "SM_MODEL_DIR",
    "TRAINING_JOB_NAME",
    "AIP_MODEL_DIR",
    "AZUREML_RUN_ID",
)


def _job_log(message: str) -> None:
    """A ``log`` event in the job's log; silent outside a job (``cloudnn
    evaluate --json`` prints JSON) and on ranks > 0 (every rank loads data)."""
    if not any(os.environ.get(name) for name in _JOB_MARKERS):
        return
    if os.environ.get("RANK", "0") not in ("", "0"):
        return
    from cloudnn.runtime.events import emit

    emit("log", message=message)


def training_reference(pre: Preprocessor) -> Reference:
    """The training data's layout as saved in ``pre`` (for evaluate/serving)."""
    return Reference(
        kind=pre.kind,
        feature_names=tuple(pre.feature_names) if pre.feature_names else None,
        columns=tuple(pre.columns) if pre.columns is not None else None,
        target=pre.target,
        shape=pre.raw_shape,
        labels=frozenset(pre.classes) if pre.classes is not None else None,
        source="the training data",
    )


def load_labeled(
    path: str | Path, data: DataSpec, pre: Preprocessor, *, where: str = "data.test"
) -> Dataset:
    """A labelled file in the training format, preprocessed with a fitted ``pre``.

    Its columns are lined up with the training columns by name; a file that
    lacks one (or has columns the training data did not) is refused.
    """
    reference = training_reference(pre)
    raw = read_raw(path, data, where=where, task=pre.task, reference=reference)
    labels, _ = check_labels(raw.labels, pre.task, file=raw.source or where)
    if pre.task == "classification":
        check_known_labels(labels, reference, file=raw.source or where)
    return pre.apply(raw)
