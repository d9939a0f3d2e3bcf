"""Endpoints: serve a trained run's model and call it, on any provider.

>>> client = cloudnn.Client()
>>> ep = client.deploy("latest")                 # or a run id, a spec, a spec path
>>> ep.predict(x_test[:3])                       # numpy, lists, dicts or strings
[{'label': 7, 'probabilities': {...}}, ...]
>>> client.endpoint(ep.name).delete()            # found again from any process

The registry (``endpoints`` table) is the source of truth; a handle reads its
row and asks the provider for the live state (a local endpoint whose process
died shows as ``Failed``, or ``Stopped`` after a clean shutdown).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudnn.errors import CloudnnError, EndpointError, JobFailedError, NotFoundError
from cloudnn.provider import EndpointRef

if TYPE_CHECKING:
    from cloudnn.client import Client
    from cloudnn.runs import EndpointRecord, RunRecord
    from cloudnn.spec import Spec

__all__ = ["Endpoint", "deploy", "get_endpoint", "list_endpoints"]

_SPEC_SUFFIXES = (".yaml", ".yml", ".json")
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
        """The bearer token (read from its 0600 file; None when auth is off)."""
        from cloudnn.local.serving import read_token

        return read_token(self.record.extra)

    def refresh(self) -> Endpoint:
        self.record = _refreshed(
            self._client, self._client.registry.get_endpoint(self.name)
        )
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
        if self.provider == "local":
            from cloudnn.local.serving import info_local_endpoint

            prov = self._client.provider("local")
            return {**info_local_endpoint(prov, self.ref), "endpoint": endpoint}  # type: ignore[arg-type]
        return {"endpoint": endpoint, "extra": dict(self.record.extra)}

    def wait(self, *, timeout: float = 120.0) -> Endpoint:
        """Block until an endpoint deployed with ``wait=False`` answers."""
        if self.provider == "local":
            from cloudnn.local import LocalProvider
            from cloudnn.local.serving import wait_local_endpoint

            provider = self._client.provider("local")
            assert isinstance(provider, LocalProvider)
            wait_local_endpoint(provider, self.ref, timeout=timeout)
        return self.refresh()

    def delete(self) -> None:
        """Stop the endpoint and remove everything created for it."""
        self._client.provider(self.provider).delete_endpoint(self.ref)
        self._client.registry.remove_endpoint(self.name)

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


# ----------------------------------------------------------------- deploy


def _is_spec_target(target: Any) -> bool:
    from cloudnn.spec import Spec

    if isinstance(target, Spec | dict):
        return True
    if isinstance(target, str | os.PathLike):
        p = Path(target)
        return p.suffix.lower() in _SPEC_SUFFIXES or p.is_file()
    return False


def _training_key(spec_json: str | dict[str, Any]) -> str:
    """The spec minus ``deploy``: two specs with the same key train the same model."""
    data = json.loads(spec_json) if isinstance(spec_json, str) else dict(spec_json)
    data.pop("deploy", None)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _latest_success(client: Client, spec: Spec) -> RunRecord:
    """Newest SUCCEEDED run of ``spec`` (same hash, else same training settings)."""
    runs = [
        r for r in client.registry.list_runs(limit=100_000) if r.state == "SUCCEEDED"
    ]
    spec_hash = spec.spec_hash()
    for record in runs:
        if record.spec_hash == spec_hash:
            return record
    # only deploy settings changed since training: the model is the same
    key = _training_key(spec.model_dump(mode="json"))
    for record in runs:
        if record.name == spec.name and _training_key(record.spec_json) == key:
            return record
    raise NotFoundError(
        f"no successful run of spec {spec.name!r} (hash {spec_hash}) in the registry",
        hint="train it first: cloudnn train SPEC",
    )


def _run_spec(record: RunRecord) -> Spec:
    """The spec a run was trained with (its data files need not exist any more)."""
    from cloudnn.spec import saved_spec

    return saved_spec(record.spec_json)


def _resolve(client: Client, target: Any) -> tuple[RunRecord, Spec]:
    from cloudnn.client import Run, as_spec

    if isinstance(target, Run | Endpoint):
        record = client.registry.get_run(target.run_id)
        spec = _run_spec(record)
    elif _is_spec_target(target):
        spec, _ = as_spec(target)
        record = _latest_success(client, spec)
    else:
        record = client.registry.get_run(str(target))
        spec = _run_spec(record)
    if record.state != "SUCCEEDED":
        raise JobFailedError(
            f"run {record.run_id} is {record.state}: only a SUCCEEDED run has a model",
            hint="deploy a finished run (see `cloudnn runs list`)",
        )
    return record, spec


def _with_overrides(spec: Spec, overrides: dict[str, Any], batching: Any) -> Spec:
    from pydantic import BaseModel, ValidationError

    from cloudnn.errors import SpecError
    from cloudnn.spec import BatchingSpec, DeploySpec

    data = spec.deploy.model_dump()
    data.update({k: v for k, v in overrides.items() if v is not None})
    if batching is False:
        data["batching"] = None
    elif batching is True:
        data["batching"] = data.get("batching") or BatchingSpec().model_dump()
    elif isinstance(batching, BaseModel):
        data["batching"] = batching.model_dump()
    elif isinstance(batching, Mapping):
        data["batching"] = {**(data.get("batching") or {}), **batching}
    elif batching is not None:
        raise SpecError(
            "deploy.batching",
            f"expected True, False or a mapping, got {type(batching).__name__}",
            hint="pass batching={'max_batch_size': 32, 'max_wait_ms': 2}",
        )
    try:
        deploy_spec = DeploySpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SpecError(
            f"deploy.{where}",
            str(first["msg"]),
            hint="fix the deploy option (see `cloudnn deploy --help`)",
        ) from exc
    return spec.model_copy(update={"deploy": deploy_spec})


def _model_uri(record: RunRecord, provider: str) -> str:
    uri = str(record.extra.get("model_uri") or "")
    if not uri:
        uri = str(Path(record.run_dir) / "model")
    if provider == "local":
        from cloudnn.spec import is_uri

        if is_uri(uri) or not (Path(uri) / "cloudnn_model.json").is_file():
            raise NotFoundError(
                f"run {record.run_id} has no local model at {uri}",
                hint="download the model next to the run, or deploy on the provider "
                f"that trained it (--provider {record.provider})",
            )
    return uri


def deploy(
    client: Client,
    target: Any,
    *,
    provider: str = "local",
    runtime: str | None = None,
    port: int | None = None,
    host: str | None = None,
    workers: int | None = None,
    batching: Any = None,
    auth: str | None = None,
    max_request_bytes: int | None = None,
    wait: bool = True,
) -> Endpoint:
    """Serve ``target``'s model on ``provider`` and return its handle.

    ``target``: a run id (or unique prefix, or ``"latest"``), a :class:`Run`,
    or a spec / spec path (its newest SUCCEEDED run). Options override the
    spec's ``deploy`` section; ``batching`` is True, False or
    ``{"max_batch_size": N, "max_wait_ms": MS}``. Idempotent: deploying the
    same run again adopts the running endpoint.
    """
    record, spec = _resolve(client, target)
    spec = _with_overrides(
        spec,
        {
            "runtime": runtime,
            "port": port,
            "host": host,
            "workers": workers,
            "auth": auth,
            "max_request_bytes": max_request_bytes,
        },
        batching,
    )
    prov = client.provider(provider)
    plan = prov.plan_endpoint(spec, _model_uri(record, provider))
    name = plan.endpoint_name
    registry = client.registry
    try:
        existing: EndpointRecord | None = registry.get_endpoint(name)
    except NotFoundError:
        existing = None
    if existing is None:  # recorded before the side effect, like every create
        registry.upsert_endpoint(
            name=name,
            provider=provider,
            state="Creating",
            run_id=record.run_id,
            extra={"model_uri": plan.model_uri},
        )
    try:
        if provider == "local" and not wait:
            from cloudnn.local.serving import create_local_endpoint

            ref = create_local_endpoint(prov, plan, wait=False)  # type: ignore[arg-type]
        else:
            ref = prov.create_endpoint(plan)
    except CloudnnError as exc:
        if provider != "local":  # the local backend records its own failures
            registry.upsert_endpoint(
                name=name,
                provider=provider,
                state="Failed",
                run_id=record.run_id,
                extra={"model_uri": plan.model_uri, "message": str(exc)},
            )
        raise
    current = registry.get_endpoint(name)
    registry.upsert_endpoint(
        name=name,
        provider=provider,
        state="InService" if wait else current.state,
        run_id=record.run_id,
        url=ref.url or current.url,
        extra={**current.extra, **ref.extra},
    )
    return Endpoint(client, registry.get_endpoint(name))


# ----------------------------------------------------------------- lookup


def _refreshed(client: Client, record: EndpointRecord) -> EndpointRecord:
    """``record`` with its live state (local: is the server process alive?)."""
    if record.provider != "local":
        return record
    from cloudnn.local.serving import local_endpoint_state

    state, message = local_endpoint_state(record)
    if state == record.state:
        return record
    return client.registry.upsert_endpoint(
        name=record.name,
        provider=record.provider,
        state=state,
        run_id=record.run_id,
        url=record.url,
        extra={**record.extra, "message": message},
    )


def get_endpoint(client: Client, name: str) -> Endpoint:
    """The endpoint called ``name`` (or a unique prefix of it), with live state."""
    registry = client.registry
    try:
        record = registry.get_endpoint(name)
    except NotFoundError:
        matches = [r for r in registry.list_endpoints() if r.name.startswith(name)]
        if len(matches) != 1:
            if len(matches) > 1:
                names = ", ".join(r.name for r in matches[:5])
                raise NotFoundError(
                    f"endpoint name prefix {name!r} is ambiguous: {names}",
                    hint="give more characters of the name",
                ) from None
            raise
        record = matches[0]
    return Endpoint(client, _refreshed(client, record))


def list_endpoints(client: Client) -> list[Endpoint]:
    """Every endpoint in the registry, newest first, with live state."""
    return [
        Endpoint(client, _refreshed(client, r))
        for r in client.registry.list_endpoints()
    ]
