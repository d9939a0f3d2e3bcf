"""`cloudnn.__all__` is honest: every name resolves, and every error is exported."""

from __future__ import annotations

import inspect

import cloudnn
from cloudnn import errors


def test_all_names_resolve() -> None:
    for name in cloudnn.__all__:
        assert getattr(cloudnn, name) is not None, name


def test_every_error_class_is_exported_and_documented() -> None:
    classes = {
        name
        for name, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, errors.CloudnnError)
    }
    assert classes == set(errors.__all__)
    assert classes <= set(cloudnn.__all__)
    tree = errors.__doc__ or ""
    for name in classes:
        assert name in tree, f"{name} is missing from the tree in errors.py"
