"""Endpoint handles: call a deployed model, inspect it, delete it, on any provider.

>>> client = cloudnn.Client()
>>> ep = client.deploy("latest")                 # or a run id, a spec, a spec path
>>> ep.predict(x_test[:3])                       # numpy, lists, dicts or strings
[{'label': 7, 'probabilities': {...}}, ...]
>>> client.endpoint(ep.name).delete()            # found again from any process

The registry (``endpoints`` table, written by the Client only) remembers each
endpoint; a handle asks its provider for the live state
(:meth:`cloudnn.provider.Provider.get_endpoint`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cloudnn.errors import EndpointError
from cloudnn.provider import EndpointRef

if TYPE_CHECKING:
    from cloudnn.client import Client
    from cloudnn.runs import EndpointRecord

__all__ = ["Endpoint"]

#: keep each request this far under the server's body limit (JSON grows a bit)
_BODY_HEADROOM = 0.8


class Endpoint:
    """A deployed model: call it, inspect it, delete it."""

    def __init__(self, client: Client, record: EndpointRecord) -> None:
        self._client = client
        self.record = record

    def __repr__(self) -> str:
        return (
            f"Endpoint({self.name!r}, provider={self.provider!r}, "
            f"state={self.state!r}, url={self.url!r})"
        )

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def provider(self) -> str:
        return self.record.provider

    @property
    def url(self) -> str:
        return self.record.url

    @property
    def state(self) -> str:
        return self.record.state

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def message(self) -> str:
        return str(self.record.extra.get("message", ""))

    @property
    def ref(self) -> EndpointRef:
        return EndpointRef(
            provider=self.provider,
            name=self.name,
            url=self.url,
            extra=self.record.extra,
        )

    @property
    def token(self) -> str | None:
        """The bearer token callers outside cloudnn send (None: none or cloud IAM)."""
        return self._client.provider(self.provider).endpoint_token(self.ref)

    def refresh(self) -> Endpoint:
        """Re-read the record and the live state."""
        self.record = self._client.endpoint(self.name).record
        return self

    def invoke(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Send a raw ``{"instances": [...]}`` payload; the raw JSON answer back."""
        return self._client.provider(self.provider).invoke(self.ref, payload)

    def predict(self, x: Any, *, batch_size: int | None = None) -> list[Any]:
        """Predictions for ``x``: one per instance, in order.

        ``x``: a numpy array or tensor (rows are instances; a 1-D numeric array
        is one instance), a list of instances, a pandas DataFrame, a dict of
        named features (one instance) or ``{"instances": [...]}``, or a string
        (one text instance). Large inputs are split into several requests, each
        under the server's body limit, or of ``batch_size`` instances.
        """
        instances = _as_instances(x)
        if not instances:
            return []
        predictions: list[Any] = []
        for chunk in _chunks(instances, batch_size, self._body_limit()):
            answer = self.invoke({"instances": chunk})
            preds = answer.get("predictions")
            if not isinstance(preds, list) or len(preds) != len(chunk):
                raise EndpointError(
                    f"endpoint {self.name} answered {len(preds or [])} predictions "
                    f"for {len(chunk)} instances",
                    hint="is another server on its port? check `cloudnn endpoints list`",
                )
            predictions.extend(preds)
        return predictions

    def info(self) -> dict[str, Any]:
        """What the endpoint serves (inputs, classes, settings) and where."""
        endpoint = {
            "name": self.name,
            "provider": self.provider,
            "state": self.state,
            "url": self.url,
            "run_id": self.run_id,
        }
        served = self._client.provider(self.provider).endpoint_info(self.ref)
        return {**served, "endpoint": endpoint}

    def wait(self, *, timeout: float | None = None) -> Endpoint:
        """Block until an endpoint deployed with ``wait=False`` is InService."""
        self._client.wait_endpoint(self, timeout=timeout)
        return self

    def delete(self) -> None:
        """Stop the endpoint and remove everything created for it."""
        self._client.delete_endpoint(self)

    def _body_limit(self) -> int:
        settings = self.record.extra.get("settings") or {}
        return int(settings.get("max_request_bytes") or 1_048_576)


# ----------------------------------------------------------------- inputs


def _as_instances(x: Any) -> list[Any]:
    """Whatever the user has -> a JSON-ready list of instances."""
    if isinstance(x, str):
        return [x]
    if isinstance(x, Mapping):
        if "instances" in x:
            return _as_instances(x["instances"])
        return [dict(x)]
    if hasattr(x, "to_dict") and hasattr(x, "columns"):  # pandas DataFrame
        return list(x.to_dict(orient="records"))
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, no torch import
        x = x.detach().cpu().numpy()
    if hasattr(x, "tolist") and hasattr(x, "ndim"):  # numpy
        if x.ndim == 0:
            return [x.tolist()]
        if x.ndim == 1 and x.dtype.kind in "biuf":
            return [x.tolist()]
        return list(x.tolist())
    if isinstance(x, list | tuple):
        items = list(x)
        if items and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in items
        ):
            return [items]  # a flat row of numbers is one instance
        return [v.tolist() if hasattr(v, "tolist") else v for v in items]
    raise EndpointError(
        f"cannot send {type(x).__name__} to an endpoint",
        hint="pass a numpy array, a list of instances, a dict or a string",
    )


def _chunks(
    instances: list[Any], batch_size: int | None, body_limit: int
) -> list[list[Any]]:
    if batch_size:
        size = max(1, int(batch_size))
    else:
        body = len(json.dumps(instances, separators=(",", ":"), default=str))
        parts = max(1, math.ceil(body / (body_limit * _BODY_HEADROOM)))
        size = max(1, math.ceil(len(instances) / parts))
    return [instances[i : i + size] for i in range(0, len(instances), size)]
