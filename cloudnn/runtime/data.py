"""Data loading and preprocessing (numpy only; no torch).

Files become :class:`RawData` (features + raw labels + groups), a
:class:`Preprocessor` is fitted on the TRAIN split only (normalisation,
imputation, vocabulary, class labels) and applied to every split, and saved
with the model so serving turns raw requests into exactly the arrays the model
was trained on.

Formats: CSV, Parquet (pyarrow), NPZ (``x``/``y``/``groups``), image folders
(``root/<class>/*.png``), and text columns tokenised into word ids.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cloudnn.errors import SpecError

if TYPE_CHECKING:
    from cloudnn.spec import DataSpec

__all__ = [
    "Dataset",
    "Preprocessor",
    "RawData",
    "load_datasets",
    "load_labeled",
    "read_raw",
    "split_indices",
]

PAD, UNK = 0, 1
_TOKEN = re.compile(r"[a-z0-9']+|[^\sa-z0-9']", re.IGNORECASE)
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass
class Dataset:
    """Model-ready arrays: x (float32 or int64 token ids), y, optional groups."""

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


def _infer_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir():
        files = [p for p in path.iterdir() if not p.name.startswith(".")]
        if any(p.is_dir() for p in files):
            return "images"
        for ext, name in ((".csv", "csv"), (".parquet", "parquet"), (".npz", "npz")):
            if any(p.suffix == ext for p in files):
                return name
        raise SpecError(
            "data.format",
            f"cannot tell the format of folder {path}",
            hint="set data.format: csv | npz | parquet | images",
        )
    suffix = path.suffix.lower()
    return {
        ".csv": "csv",
        ".tsv": "csv",
        ".parquet": "parquet",
        ".pq": "parquet",
        ".npz": "npz",
    }.get(suffix, "csv")


def _single_file(path: Path, ext: str) -> Path:
    """A directory channel holding one data file (SageMaker-style) -> that file."""
    if path.is_file():
        return path
    files = sorted(p for p in path.iterdir() if p.suffix == ext)
    if not files:
        raise SpecError("data.train", f"no {ext} file in {path}", hint="check the path")
    return files[0]


def _read_table(path: Path, fmt: str) -> tuple[list[str], dict[str, list[Any]]]:
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise SpecError(
                "data.format",
                "reading Parquet needs pyarrow",
                hint='pip install "cloudnn[parquet]"',
            ) from exc
        table = pq.read_table(_single_file(path, ".parquet"))
        return list(table.column_names), {
            c: table.column(c).to_pylist() for c in table.column_names
        }
    file = _single_file(path, ".csv")
    with open(file, newline="", encoding="utf-8") as fh:
        sample = fh.read(4096)
        fh.seek(0)
        delimiter = (
            "\t"
            if file.suffix == ".tsv" or ("\t" in sample and "," not in sample)
            else ","
        )
        reader = csv.reader(fh, delimiter=delimiter)
        header = next(reader, None)
        if not header:
            raise SpecError(
                "data.train", f"{file} is empty", hint="give a CSV with a header row"
            )
        columns: dict[str, list[Any]] = {h: [] for h in header}
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise SpecError(
                    "data.train",
                    f"{file.name} line {lineno} has {len(row)} fields, header has {len(header)}",
                    hint="fix the CSV (quote fields that contain commas)",
                )
            for h, v in zip(header, row, strict=True):
                columns[h].append(v)
    if not columns[header[0]]:
        raise SpecError(
            "data.train", f"{file} has a header but no rows", hint="add data rows"
        )
    return header, columns


def _to_float(values: list[Any], column: str) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if v is None or v == "":
            out[i] = np.nan  # imputed later with the train mean
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            raise SpecError(
                "data.features",
                f"column {column!r} is not numeric (value {v!r} in row {i + 1})",
                hint="list numeric columns in data.features, or use data.text for text",
            ) from None
    return out


def _label_values(values: list[Any]) -> list[Any]:
    """Numbers stay numbers (ints when whole), anything else stays a string."""
    out: list[Any] = []
    for v in values:
        if isinstance(v, int | float | np.integer | np.floating):
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


def read_raw(path: str | Path, data: DataSpec) -> RawData:
    """Read one data file/folder into :class:`RawData` following ``data``."""
    p = Path(path)
    fmt = _infer_format(p, data.format)
    if fmt == "npz":
        return _read_npz(_single_file(p, ".npz"), data)
    if fmt == "images":
        return _read_images(p, data)
    header, cols = _read_table(p, fmt)
    target = data.target or header[-1]
    if target not in cols:
        raise SpecError(
            "data.target",
            f"no column {target!r} in {p.name} (columns: {', '.join(header[:12])})",
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
            "data.features", "no feature columns left", hint="add feature columns"
        )
    feats = np.stack([_to_float(cols[n], n) for n in names], axis=1)
    return RawData(feats, labels, groups, names, "tabular")


def _read_npz(path: Path, data: DataSpec) -> RawData:
    with np.load(path, allow_pickle=False) as z:
        xkey = "x" if "x" in z else ("X" if "X" in z else None)
        ykey = data.target or ("y" if "y" in z else ("Y" if "Y" in z else None))
        if xkey is None or ykey is None or ykey not in z:
            raise SpecError(
                "data.target",
                f"{path.name} needs arrays 'x' and 'y' (has: {', '.join(z.files)})",
                hint="save with np.savez(path, x=..., y=...) or set data.target to the label key",
            )
        x = np.asarray(z[xkey], dtype=np.float64)
        y = np.asarray(z[ykey])
        groups = (
            np.asarray(z["groups"]).astype(str).astype(object)
            if "groups" in z
            else None
        )
    if len(x) != len(y):
        raise SpecError(
            "data.train",
            f"{path.name}: x has {len(x)} rows, y has {len(y)}",
            hint="fix the arrays",
        )
    kind = {2: "tabular", 3: "sequence", 4: "image"}.get(x.ndim)
    if kind is None:
        raise SpecError(
            "data.train",
            f"{path.name}: x must be 2-D (rows), 3-D (sequences) or 4-D (images), got {x.ndim}-D",
            hint="reshape x",
        )
    names = [f"x{i}" for i in range(x.shape[1])] if kind == "tabular" else None
    return RawData(x, y, groups, names, kind)


def _read_image(path: Path, size: tuple[int, int] | None, gray: bool) -> np.ndarray:
    import matplotlib.image as mpimg

    img = np.asarray(mpimg.imread(path), dtype=np.float64)
    if img.dtype.kind in "ui" or img.max(initial=0) > 1.0:
        img = img / 255.0
    if img.ndim == 2:
        img = img[:, :, None]
    img = img[:, :, :3] if img.shape[2] >= 3 else img[:, :, :1]
    if gray and img.shape[2] == 3:
        img = img.mean(axis=2, keepdims=True)
    if size is not None and img.shape[:2] != tuple(size):
        # nearest-neighbour resize: no Pillow dependency
        rows = (np.arange(size[0]) * img.shape[0] / size[0]).astype(int)
        cols = (np.arange(size[1]) * img.shape[1] / size[1]).astype(int)
        img = img[rows][:, cols]
    return img.transpose(2, 0, 1)  # (C, H, W)


def _read_images(root: Path, data: DataSpec) -> RawData:
    classes = sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    images: list[np.ndarray] = []
    labels: list[str] = []
    for cdir in classes:
        for f in sorted(cdir.iterdir()):
            if f.suffix.lower() in _IMAGE_EXT:
                images.append(_read_image(f, data.image_size, data.grayscale))
                labels.append(cdir.name)
    if not images:
        raise SpecError(
            "data.train",
            f"no images under {root} (expected {root}/<class>/*.png)",
            hint="put one folder per class with .png/.jpg files in it",
        )
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise SpecError(
            "data.image_size",
            f"images have different sizes {sorted(shapes)[:3]}",
            hint="set data.image_size: [H, W] to resize them",
        )
    return RawData(np.stack(images), labels, None, None, "image")


# ----------------------------------------------------------- preprocessing


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    return _TOKEN.findall(text.lower() if lowercase else text)


@dataclass
class Preprocessor:
    """Everything that turns raw inputs into model inputs; saved as preprocess.json."""

    kind: str
    task: str
    input_shape: tuple[int, ...]
    feature_names: list[str] | None = None
    normalize: str = "none"
    shift: list[float] | None = None  # subtracted (mean or min), per feature/channel
    scale: list[float] | None = None  # divided (std or range), per feature/channel
    fill: list[float] | None = None  # imputation value per feature (train mean)
    classes: list[Any] | None = None
    target: str | None = None
    target_width: int = 1
    text_column: str | None = None
    vocab: dict[str, int] | None = None
    max_length: int | None = None
    lowercase: bool = True
    image_size: tuple[int, int] | None = None
    grayscale: bool = False
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
    ) -> Preprocessor:
        """Fit statistics on the TRAIN split ``raw``."""
        pre = cls(
            kind=raw.kind,
            task=task,
            input_shape=(),
            feature_names=raw.feature_names,
            normalize=data.normalize,
            target=data.target,
            image_size=tuple(data.image_size) if data.image_size else None,
            grayscale=data.grayscale,
        )
        if task == "classification":
            labels = _label_values(
                list(all_labels if all_labels is not None else raw.labels)
            )
            uniq = sorted(set(labels), key=lambda v: (isinstance(v, str), v))
            if len(uniq) < 2:
                raise SpecError(
                    "data.target",
                    f"the label column has {len(uniq)} distinct value(s); classification needs 2+",
                    hint="check data.target, or use task: regression",
                )
            pre.classes = uniq
        else:
            y = np.asarray(raw.labels, dtype=np.float64)
            pre.target_width = 1 if y.ndim == 1 else int(y.shape[1])
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
            words = [w for w, c in counts.most_common() if c >= t.min_freq][
                : t.vocab_size - 2
            ]
            pre.vocab = {w: i + 2 for i, w in enumerate(words)}
            pre.input_shape = (t.max_length,)
            pre.normalize = "none"
            return pre
        x = np.asarray(raw.features, dtype=np.float64)
        pre.raw_shape = tuple(int(d) for d in x.shape[1:])
        if raw.kind == "tabular":
            axes: tuple[int, ...] = (0,)
        elif raw.kind == "image":
            axes = (0, 2, 3)  # per channel
        else:
            axes = (0, 1)  # sequences: per feature over all timesteps
        with np.errstate(all="ignore"):
            mean = np.nanmean(x, axis=axes)
        mean = np.where(np.isnan(mean), 0.0, mean)
        pre.fill = mean.tolist()
        x = _impute(x, mean, raw.kind)
        if data.normalize == "standard":
            std = x.std(axis=axes)
            pre.shift, pre.scale = (
                mean.tolist(),
                np.where(std > 1e-12, std, 1.0).tolist(),
            )
        elif data.normalize == "minmax":
            lo, hi = x.min(axis=axes), x.max(axis=axes)
            pre.shift, pre.scale = (
                lo.tolist(),
                np.where(hi - lo > 1e-12, hi - lo, 1.0).tolist(),
            )
        if input_shape is not None:
            if int(np.prod(input_shape)) != int(np.prod(pre.raw_shape)):
                raise SpecError(
                    "model.input_shape",
                    f"{list(input_shape)} holds {int(np.prod(input_shape))} values, "
                    f"the data has {int(np.prod(pre.raw_shape))} per row",
                    hint="make the product of input_shape equal the number of features",
                )
            pre.input_shape = tuple(int(d) for d in input_shape)
        else:
            pre.input_shape = pre.raw_shape
        return pre

    # -- applying ----------------------------------------------------------

    @property
    def num_outputs(self) -> int:
        return len(self.classes) if self.classes is not None else self.target_width

    def encode_labels(self, labels: Sequence[Any] | np.ndarray) -> np.ndarray:
        if self.task != "classification":
            return np.asarray(labels, dtype=np.float32)
        assert self.classes is not None
        index = {c: i for i, c in enumerate(self.classes)}
        out = np.empty(len(labels), dtype=np.int64)
        for i, v in enumerate(_label_values(list(labels))):
            if v not in index:
                raise SpecError(
                    "data.target",
                    f"label {v!r} was not seen in training (classes: {self.classes[:10]})",
                    hint="every label must occur in the training data",
                )
            out[i] = index[v]
        return out

    def decode(self, indices: Sequence[int] | np.ndarray) -> list[Any]:
        """Class indices -> original labels."""
        assert self.classes is not None
        return [self.classes[int(i)] for i in indices]

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
            if x.ndim >= 2 and int(np.prod(x.shape[1:])) == int(
                np.prod(self.raw_shape)
            ):
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
            n = int(np.prod(got)) if got else 0
            return f"expected {self.raw_shape[0]} features per instance, got {n}"
        return f"expected instances of shape {list(self.raw_shape)}, got {list(got)}"

    def _encode_texts(self, texts: list[Any]) -> np.ndarray:
        assert self.vocab is not None and self.max_length is not None
        out = np.zeros((len(texts), self.max_length), dtype=np.int64)
        for i, t in enumerate(texts):
            if isinstance(t, dict) and self.text_column in t:
                t = t[self.text_column]
            if not isinstance(t, str):
                raise ValueError(
                    f"expected a string per instance, got {type(t).__name__}"
                )
            ids = [self.vocab.get(w, UNK) for w in tokenize(t, self.lowercase)][
                : self.max_length
            ]
            out[i, : len(ids)] = ids
        return out

    def transform(self, instances: Any) -> np.ndarray:
        """Raw request instances -> model input (what serving calls).

        Accepts a numpy array, a list of feature lists, a list of dicts keyed by
        feature name (tabular), strings (text), or nested lists (images,
        sequences). Raises ``ValueError`` with a one-line reason otherwise.
        """
        if isinstance(instances, np.ndarray):
            items: list[Any] = (
                list(instances) if instances.dtype == object else instances
            )  # type: ignore[assignment]
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
        if isinstance(items, list) and isinstance(items[0], dict):
            items = [self._from_dict(d) for d in items]
        try:
            x = np.asarray(items, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                "instances must be numbers of one consistent shape"
                + (f" ({self._shape_message(())})" if self.kind == "tabular" else "")
            ) from exc
        if x.ndim == 1 and self.kind == "tabular" and self.raw_shape == (len(x),):
            x = x[None, :]
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
        d = asdict(self)
        d["format"] = 1
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        d = {k: v for k, v in d.items() if k != "format"}
        for key in ("input_shape", "raw_shape", "image_size"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / "preprocess.json"
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Preprocessor:
        return cls.from_dict(
            json.loads((Path(directory) / "preprocess.json").read_text())
        )


def _impute(x: np.ndarray, fill: np.ndarray, kind: str) -> np.ndarray:
    if not np.isnan(x).any():
        return x
    x = x.copy()
    if kind == "tabular":
        rows, cols = np.where(np.isnan(x))
        x[rows, cols] = fill[cols]
    elif kind == "image":
        x = np.where(np.isnan(x), fill[None, :, None, None], x)
    else:
        x = np.where(np.isnan(x), fill[None, None, :], x)
    return x


# ------------------------------------------------------------------- splits


def split_indices(
    labels: Sequence[Any] | np.ndarray,
    *,
    validation: float,
    test: float,
    seed: int,
    stratify: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic (train, validation, test) index arrays, stratified by label."""
    n = len(labels)
    rng = np.random.default_rng(seed)
    if stratify:
        values = [
            str(v)
            for v in (labels.tolist() if isinstance(labels, np.ndarray) else labels)
        ]
        groups: dict[str, list[int]] = {}
        for i, v in enumerate(values):
            groups.setdefault(v, []).append(i)
        buckets = [np.asarray(groups[k]) for k in sorted(groups)]
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
    """Train/validation/test datasets and the preprocessor fitted on train."""
    train_raw = read_raw(data.train, data)
    split_seed = data.split.seed if seed is None else seed
    stratify = data.split.stratify and task == "classification"
    val_raw = read_raw(data.validation, data) if data.validation else None
    test_raw = read_raw(data.test, data) if data.test else None
    all_labels = (
        list(_label_values(list(train_raw.labels)))
        if task == "classification"
        else None
    )
    if val_raw is None or test_raw is None:
        tr, va, te = split_indices(
            train_raw.labels,
            validation=0.0 if val_raw is not None else data.split.validation,
            test=0.0 if test_raw is not None else data.split.test,
            seed=split_seed,
            stratify=stratify,
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
            hint="lower data.split.validation/test",
        )
    pre = Preprocessor.fit(
        train_raw, data, task, input_shape=input_shape, all_labels=all_labels
    )
    return pre.apply(train_raw), pre.apply(val_raw), pre.apply(test_raw), pre


def load_labeled(path: str | Path, data: DataSpec, pre: Preprocessor) -> Dataset:
    """A labelled file in the training format, preprocessed with a fitted ``pre``."""
    return pre.apply(read_raw(path, data))
