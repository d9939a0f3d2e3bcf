"""The abstract contract tests: plain classes whose ``test_*`` methods take fixtures.

Combine each with a :class:`~cloudnn.testing.ProviderFixtures` subclass in a
``Test*`` class to run it against one provider (see :mod:`cloudnn.testing`).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from cloudnn.errors import (
    CloudnnError,
    EndpointError,
    NotFoundError,
    UnsupportedFeatureError,
)
from cloudnn.provider import (
    Capability,
    CheckReport,
    EndpointPlan,
    EndpointRef,
    EndpointState,
    JobRef,
    JobState,
    JobStatus,
    Phase,
    Provider,
    TrainingPlan,
)
from cloudnn.spec import Spec, is_uri
from cloudnn.testing.fixtures import (
    ContractJob,
    _poll_interval,
    assert_no_side_effects,
    log_events,
    spec_requiring,
    wait_for_endpoint,
    wait_for_terminal,
)

__all__ = ["AbstractEndpointTests", "AbstractJobTests", "AbstractPlanTests"]

#: a run id no contract test ever submits
_NEVER_SUBMITTED = "contract-never-submitted-0000"
#: DNS-label-safe: endpoint names end up in hostnames and ARNs
_ENDPOINT_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ALL_CAPABILITIES = sorted(Capability, key=lambda c: c.value)


def _assert_cost(value: float | None, what: str) -> None:
    assert value is None or (math.isfinite(value) and value >= 0), (
        f"{what} must be None or a finite amount >= 0, got {value!r}"
    )


def _assert_json_ready(data: Mapping[str, Any]) -> None:
    """Plans are printed and golden-tested as JSON: no NaN, nothing exotic."""
    json.dumps(data, sort_keys=True, allow_nan=False)


def _wait_for_event(
    provider: Provider, ref: JobRef, event: str, *, timeout: float
) -> None:
    """Follow the job's log until the runtime emits ``event``."""
    deadline = time.monotonic() + timeout
    cursor: Any = None
    while time.monotonic() < deadline:
        for line in provider.stream_logs(ref, since=cursor):
            cursor = line.cursor
            if any(e.get("event") == event for e in log_events([line])):
                return
        if provider.get_job(ref).state.terminal:
            break
        time.sleep(_poll_interval(provider))
    raise AssertionError(f"job {ref.job_id} logged no {event!r} event")


def _pure_dirs(state_dirs: Iterable[Path], *specs: Spec) -> list[Path]:
    """``state_dirs`` plus the folders holding the specs' local data files."""
    dirs = list(state_dirs)
    for spec in specs:
        for value in (spec.data.train, spec.data.validation, spec.data.test):
            if value and not is_uri(value):
                dirs.append(Path(value).parent)
    return dirs


def _json_round_trip(value: Mapping[str, Any]) -> dict[str, Any]:
    """``value`` through JSON, as the run registry stores refs' ``extra``."""
    return dict(json.loads(json.dumps(dict(value), allow_nan=False)))


def _assert_state(status: JobStatus, expected: JobState, lines: Iterable[str]) -> None:
    if status.state is not expected:
        tail = "\n".join(list(lines)[-20:])
        raise AssertionError(
            f"expected {expected.value}, got {status.state.value}: "
            f"{status.message or '(no message)'}\nlast log lines:\n{tail}"
        )


def _with_epochs(spec: Spec, epochs: int) -> Spec:
    raw = spec.model_dump(mode="json")
    raw["train"]["epochs"] = epochs
    return Spec.model_validate(raw)


# ---------------------------------------------------------------------- plans


class AbstractPlanTests:
    """``plan_training`` is pure, deterministic, data, and refuses early."""

    def test_plan_is_pure(
        self, provider: Provider, contract_spec: Spec, state_dirs: list[Path]
    ) -> None:
        with assert_no_side_effects(_pure_dirs(state_dirs, contract_spec)):
            provider.plan_training(contract_spec, run_id="contract-pure-1")

    def test_plan_is_deterministic(
        self, provider: Provider, contract_spec: Spec
    ) -> None:
        first = provider.plan_training(contract_spec, run_id="contract-det-1")
        again = provider.plan_training(contract_spec, run_id="contract-det-1")
        assert first.to_dict() == again.to_dict()
        equal_spec = Spec.model_validate(contract_spec.model_dump())
        rebuilt = provider.plan_training(equal_spec, run_id="contract-det-1")
        assert rebuilt.to_dict() == first.to_dict()

    def test_plan_names_follow_the_run_id(
        self, provider: Provider, contract_spec: Spec
    ) -> None:
        a = provider.plan_training(contract_spec, run_id="contract-names-a")
        b = provider.plan_training(contract_spec, run_id="contract-names-b")
        assert a.job_name and b.job_name
        assert a.job_name != b.job_name, "two runs would adopt each other's job"

    def test_plan_is_json_data_of_this_spec(
        self, provider: Provider, contract_spec: Spec
    ) -> None:
        plan = provider.plan_training(contract_spec, run_id="contract-json-1")
        data = plan.to_dict()
        _assert_json_ready(data)
        assert data["provider"] == provider.name == plan.provider
        assert data["kind"] == "training"
        assert data["run_id"] == plan.run_id == "contract-json-1"
        assert data["spec_hash"] == contract_spec.spec_hash()
        assert plan.spec == contract_spec
        assert plan.requests, "a plan holds the exact requests it will send"
        assert all(isinstance(r, Mapping) for r in plan.requests)
        assert plan.instance_count >= 1 and plan.processes_per_node >= 1
        assert isinstance(plan.instance_type, str) and plan.instance_type
        assert all(isinstance(w, str) and w for w in plan.warnings)

    def test_plan_costs_are_unknown_or_non_negative(
        self, provider: Provider, contract_spec: Spec
    ) -> None:
        plan = provider.plan_training(contract_spec, run_id="contract-cost-1")
        _assert_cost(plan.hourly_cost_usd, "hourly_cost_usd")
        _assert_cost(plan.estimated_cost_usd, "estimated_cost_usd")

    def test_unsupported_capabilities_have_human_reasons(
        self, provider: Provider
    ) -> None:
        for capability, reason in provider.unsupported.items():
            assert isinstance(capability, Capability), capability
            assert isinstance(reason, str) and len(reason.split()) >= 3, (
                f"{capability.value}: say why, in words: {reason!r}"
            )

    @pytest.mark.parametrize("capability", _ALL_CAPABILITIES, ids=lambda c: c.value)
    def test_unsupported_capability_is_refused_at_plan_time(
        self,
        provider: Provider,
        contract_spec: Spec,
        plan_model_uri: str,
        remote_data_uri: str,
        state_dirs: list[Path],
        tmp_path: Path,
        capability: Capability,
    ) -> None:
        if capability not in provider.unsupported:
            pytest.skip("the provider does not declare this capability unsupported")
        spec = spec_requiring(
            contract_spec, capability, tmp_path, remote_data_uri=remote_data_uri
        )
        with (
            assert_no_side_effects(_pure_dirs(state_dirs, contract_spec)),
            pytest.raises(UnsupportedFeatureError) as caught,
        ):
            if capability.phase is Phase.ENDPOINT:
                provider.plan_endpoint(spec, plan_model_uri)
            else:
                provider.plan_training(spec, run_id="contract-refused-1")
        err = caught.value
        assert err.provider == provider.name
        assert err.exit_code == 2
        assert provider.name in str(err)
        rows = [(f, r) for f, r in err.rows if capability.value in f]
        assert rows, f"no row names {capability.value}: {err.rows}"
        for feature, reason in rows:
            assert len(reason.split()) >= 3, f"{feature}: no human reason: {reason!r}"

    @pytest.mark.parametrize("capability", _ALL_CAPABILITIES, ids=lambda c: c.value)
    def test_supported_capability_is_planned(
        self,
        provider: Provider,
        contract_spec: Spec,
        plan_model_uri: str,
        remote_data_uri: str,
        capabilities: frozenset[Capability],
        tmp_path: Path,
        capability: Capability,
    ) -> None:
        if capability not in capabilities:
            pytest.skip("the binding does not list this capability as supported")
        spec = spec_requiring(
            contract_spec, capability, tmp_path, remote_data_uri=remote_data_uri
        )
        plan: EndpointPlan | TrainingPlan
        if capability.phase is Phase.ENDPOINT:
            plan = provider.plan_endpoint(spec, plan_model_uri)
        else:
            plan = provider.plan_training(spec, run_id="contract-supported-1")
        _assert_json_ready(plan.to_dict())

    @pytest.mark.parametrize(
        "capability",
        [c for c in _ALL_CAPABILITIES if c.phase is Phase.ENDPOINT],
        ids=lambda c: c.value,
    )
    def test_endpoint_needs_never_block_training(
        self,
        provider: Provider,
        contract_spec: Spec,
        remote_data_uri: str,
        tmp_path: Path,
        capability: Capability,
    ) -> None:
        """A spec asking for serving features the provider lacks still trains."""
        spec = spec_requiring(
            contract_spec, capability, tmp_path, remote_data_uri=remote_data_uri
        )
        plan = provider.plan_training(spec, run_id="contract-endpoint-need-1")
        assert plan.requests

    def test_plan_says_where_the_model_lands(
        self, provider: Provider, contract_spec: Spec
    ) -> None:
        plan = provider.plan_training(contract_spec, run_id="contract-where-1")
        assert isinstance(plan.model_uri, str) and plan.model_uri
        assert isinstance(plan.output_uri, str) and plan.output_uri
        other = provider.plan_training(contract_spec, run_id="contract-where-2")
        assert other.model_uri != plan.model_uri, "two runs would share a model"

    def test_uploads_are_content_addressed(
        self, provider: Provider, contract_spec: Spec
    ) -> None:
        plan = provider.plan_training(contract_spec, run_id="contract-uploads-1")
        for upload in plan.uploads:
            assert re.fullmatch(r"[0-9a-f]{64}", upload.sha256), upload
            assert upload.size >= 0 and upload.source and upload.destination
            assert upload.sha256 in upload.destination, (
                f"{upload.destination}: a destination that does not name the "
                "content would be uploaded again, or overwritten"
            )
        again = provider.plan_training(contract_spec, run_id="contract-uploads-2")
        data = {u.sha256: u.destination for u in plan.uploads if u.kind == "data"}
        for upload in again.uploads:
            if upload.kind == "data":
                assert data.get(upload.sha256) == upload.destination, (
                    "the same data in another run must go to the same place"
                )


# ----------------------------------------------------------------------- jobs


class AbstractJobTests:
    """Submitting, following, adopting and cancelling a training job."""

    def test_check_reports_for_this_provider(
        self, provider: Provider, state_dirs: list[Path]
    ) -> None:
        with assert_no_side_effects(state_dirs, allow_network=True):
            report = provider.check()
        assert isinstance(report, CheckReport)
        assert report.provider == provider.name
        assert isinstance(report.ok, bool)
        for check in report.checks:
            what, passed, detail = check
            assert isinstance(what, str) and what
            assert isinstance(passed, bool) and isinstance(detail, str)

    def test_unknown_job_is_not_found(self, provider: Provider) -> None:
        ref = JobRef(
            provider=provider.name, run_id=_NEVER_SUBMITTED, job_id=_NEVER_SUBMITTED
        )
        with pytest.raises(NotFoundError):
            provider.get_job(ref)

    def test_submit_returns_a_ref_to_the_planned_job(
        self, provider: Provider, contract_job: ContractJob
    ) -> None:
        ref = contract_job.ref
        assert ref.provider == provider.name
        assert ref.run_id == contract_job.plan.run_id
        assert isinstance(ref.job_id, str) and ref.job_id

    def test_job_reaches_success_through_unified_states(
        self, contract_job: ContractJob
    ) -> None:
        for status in contract_job.statuses:
            assert type(status.state) is JobState, status
            assert isinstance(status.vendor_state, str)
            assert isinstance(status.message, str)
            assert isinstance(status.metrics, Mapping)
        assert not any(s.state.terminal for s in contract_job.statuses[:-1])
        texts = [line.text for line in contract_job.lines]
        _assert_state(contract_job.final, JobState.SUCCEEDED, texts)

    def test_model_downloads_to_a_local_model_folder(
        self, provider: Provider, contract_job: ContractJob, tmp_path: Path
    ) -> None:
        uri = contract_job.final.model_uri or contract_job.plan.model_uri
        folder = provider.download(uri, tmp_path / "model")
        assert (folder / "cloudnn_model.json").is_file(), sorted(
            p.name for p in folder.iterdir()
        )

    def test_final_state_is_stable(
        self, provider: Provider, contract_job: ContractJob
    ) -> None:
        assert provider.get_job(contract_job.ref).state is contract_job.final.state

    def test_submitting_the_same_plan_twice_adopts(
        self, provider: Provider, contract_job: ContractJob
    ) -> None:
        first, second = contract_job.ref, contract_job.second_ref
        assert (second.provider, second.run_id, second.job_id) == (
            first.provider,
            first.run_id,
            first.job_id,
        )
        events = log_events(contract_job.lines)
        starts = [e for e in events if e.get("event") == "start"]
        assert len(starts) == 1, f"the job started {len(starts)} times: {starts}"

    def test_ref_survives_the_registry(
        self, provider: Provider, contract_job: ContractJob
    ) -> None:
        ref = contract_job.ref
        stored = JobRef(
            provider=ref.provider,
            run_id=ref.run_id,
            job_id=ref.job_id,
            extra=_json_round_trip(ref.extra),
        )
        assert provider.get_job(stored).state is contract_job.final.state

    def test_log_cursors_resume_without_repeating(
        self, provider: Provider, contract_job: ContractJob
    ) -> None:
        full = list(provider.stream_logs(contract_job.ref))
        texts = [line.text for line in full]
        assert texts, "a finished job has log lines"
        assert any(e.get("event") == "start" for e in log_events(texts))
        followed = [line.text for line in contract_job.lines]
        assert followed == texts[: len(followed)], "following the cursor lost lines"
        again = [line.text for line in provider.stream_logs(contract_job.ref)]
        assert again == texts, "reading from the start is repeatable"
        for k in sorted({0, len(full) // 2, len(full) - 1}):
            rest = provider.stream_logs(contract_job.ref, since=full[k].cursor)
            assert [line.text for line in rest] == texts[k + 1 :], f"since line {k}"

    def test_cancel_on_a_finished_job_is_a_no_op(
        self, provider: Provider, contract_job: ContractJob
    ) -> None:
        provider.cancel_job(contract_job.ref)
        provider.cancel_job(contract_job.ref)
        assert provider.get_job(contract_job.ref).state is contract_job.final.state

    def test_cancel_right_after_submit_ends_cancelled(
        self,
        provider: Provider,
        contract_spec: Spec,
        can_run: bool,
        job_timeout: float,
    ) -> None:
        if not can_run:
            pytest.skip("this binding cannot run jobs (can_run is False)")
        self._cancel(provider, contract_spec, after_epoch=False, timeout=job_timeout)

    def test_cancel_while_training_ends_cancelled(
        self,
        provider: Provider,
        contract_spec: Spec,
        can_run: bool,
        job_timeout: float,
    ) -> None:
        if not can_run:
            pytest.skip("this binding cannot run jobs (can_run is False)")
        self._cancel(provider, contract_spec, after_epoch=True, timeout=job_timeout)

    @staticmethod
    def _cancel(
        provider: Provider, spec: Spec, *, after_epoch: bool, timeout: float
    ) -> None:
        """Cancel a long job (at once, or after its first epoch): CANCELLED."""
        long_spec = _with_epochs(spec, 100_000)
        run_id = f"{spec.name}-cancel-{secrets.token_hex(3)}"
        ref = provider.submit_training(provider.plan_training(long_spec, run_id=run_id))
        try:
            if after_epoch:
                _wait_for_event(provider, ref, "epoch", timeout=timeout)
            provider.cancel_job(ref)
            final = wait_for_terminal(provider, ref, timeout=timeout)[-1]
            texts = [line.text for line in provider.stream_logs(ref)]
            _assert_state(final, JobState.CANCELLED, texts)
        finally:
            if not provider.get_job(ref).state.terminal:
                provider.cancel_job(ref)
                wait_for_terminal(provider, ref, timeout=timeout)

    # last: a provider that wrongly restarts the job rewrites its log and model
    def test_resubmitting_a_finished_job_adopts_it(
        self, provider: Provider, contract_job: ContractJob, job_timeout: float
    ) -> None:
        ref = provider.submit_training(contract_job.plan)
        try:
            assert ref.job_id == contract_job.ref.job_id
            status = provider.get_job(ref)
            assert status.state is contract_job.final.state, (
                f"re-submitting a {contract_job.final.state.value} job started it "
                f"again (now {status.state.value})"
            )
        finally:  # leave nothing running for the tests after this one
            wait_for_terminal(provider, ref, timeout=job_timeout)


# ------------------------------------------------------------------ endpoints


class AbstractEndpointTests:
    """Planning, creating, adopting, invoking and deleting an endpoint."""

    def test_plan_endpoint_is_pure(
        self,
        provider: Provider,
        contract_spec: Spec,
        plan_model_uri: str,
        state_dirs: list[Path],
    ) -> None:
        dirs = _pure_dirs(state_dirs, contract_spec)
        if not is_uri(plan_model_uri):
            dirs.append(Path(plan_model_uri))
        with assert_no_side_effects(dirs):
            provider.plan_endpoint(contract_spec, plan_model_uri)

    def test_plan_endpoint_is_deterministic(
        self, provider: Provider, contract_spec: Spec, plan_model_uri: str
    ) -> None:
        first = provider.plan_endpoint(contract_spec, plan_model_uri)
        again = provider.plan_endpoint(contract_spec, plan_model_uri)
        assert first.to_dict() == again.to_dict()
        equal_spec = Spec.model_validate(contract_spec.model_dump())
        assert provider.plan_endpoint(equal_spec, plan_model_uri).to_dict() == (
            first.to_dict()
        )

    def test_plan_endpoint_is_json_data(
        self, provider: Provider, contract_spec: Spec, plan_model_uri: str
    ) -> None:
        plan = provider.plan_endpoint(contract_spec, plan_model_uri)
        data = plan.to_dict()
        _assert_json_ready(data)
        assert data["provider"] == provider.name and data["kind"] == "endpoint"
        assert plan.spec == contract_spec
        assert _ENDPOINT_NAME.fullmatch(plan.endpoint_name), plan.endpoint_name
        assert plan.model_uri and plan.requests and plan.replicas >= 1
        _assert_cost(plan.hourly_cost_usd, "hourly_cost_usd")

    # -- live endpoint ------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def endpoint_plan(
        cls,
        provider: Provider,
        contract_spec: Spec,
        can_run: bool,
        trained_model_uri: str,
    ) -> Iterator[EndpointPlan]:
        """The contract endpoint's plan; whatever it created is deleted at the end."""
        if not can_run:
            pytest.skip("this binding cannot run endpoints (can_run is False)")
        plan = provider.plan_endpoint(contract_spec, trained_model_uri)
        yield plan
        with contextlib.suppress(CloudnnError):  # the delete test reports failures
            provider.delete_endpoint(
                EndpointRef(provider=provider.name, name=plan.endpoint_name)
            )

    @pytest.fixture
    def endpoint(
        self, provider: Provider, endpoint_plan: EndpointPlan, job_timeout: float
    ) -> EndpointRef:
        """The live endpoint (created once; each later use adopts it), InService."""
        ref = provider.create_endpoint(endpoint_plan)
        seen = wait_for_endpoint(provider, ref, timeout=job_timeout)
        assert seen[-1].state is EndpointState.IN_SERVICE, seen[-1]
        return ref

    def test_unknown_endpoint_is_not_found(self, provider: Provider) -> None:
        ref = EndpointRef(provider=provider.name, name="contract-never-created")
        with pytest.raises(NotFoundError):
            provider.get_endpoint(ref)

    def test_endpoint_states_are_unified(
        self, provider: Provider, endpoint: EndpointRef
    ) -> None:
        status = provider.get_endpoint(endpoint)
        assert type(status.state) is EndpointState
        assert status.state is EndpointState.IN_SERVICE
        assert isinstance(status.message, str)

    def test_invoke_returns_one_prediction_per_instance(
        self,
        provider: Provider,
        endpoint: EndpointRef,
        contract_instances: list[Any],
    ) -> None:
        assert endpoint.provider == provider.name
        answer = provider.invoke(endpoint, {"instances": contract_instances})
        assert isinstance(answer, dict) and isinstance(answer.get("predictions"), list)
        assert len(answer["predictions"]) == len(contract_instances)
        one = provider.invoke(endpoint, {"instances": contract_instances[:1]})
        assert len(one["predictions"]) == 1
        again = provider.invoke(endpoint, {"instances": contract_instances})
        assert again["predictions"] == answer["predictions"], "serving is not stable"

    def test_creating_twice_adopts(
        self, provider: Provider, endpoint: EndpointRef, endpoint_plan: EndpointPlan
    ) -> None:
        again = provider.create_endpoint(endpoint_plan)
        assert (again.provider, again.name, again.url) == (
            endpoint.provider,
            endpoint.name,
            endpoint.url,
        )
        assert again.name == endpoint_plan.endpoint_name

    def test_ref_survives_the_registry(
        self,
        provider: Provider,
        endpoint: EndpointRef,
        contract_instances: list[Any],
    ) -> None:
        stored = EndpointRef(
            provider=endpoint.provider,
            name=endpoint.name,
            url=endpoint.url,
            extra=_json_round_trip(endpoint.extra),
        )
        answer = provider.invoke(stored, {"instances": contract_instances[:1]})
        assert len(answer["predictions"]) == 1

    def test_bad_payload_raises_endpoint_error(
        self, provider: Provider, endpoint: EndpointRef
    ) -> None:
        with pytest.raises(EndpointError):
            provider.invoke(endpoint, {"instances": "not a list of instances"})

    def test_delete_removes_it_and_a_second_delete_is_quiet(
        self,
        provider: Provider,
        endpoint: EndpointRef,
        contract_instances: list[Any],
    ) -> None:
        provider.delete_endpoint(endpoint)
        with pytest.raises(CloudnnError):
            provider.invoke(endpoint, {"instances": contract_instances[:1]})
        try:
            state = provider.get_endpoint(endpoint).state
        except NotFoundError:
            state = None
        assert state in (None, EndpointState.DELETING), f"still {state} after delete"
        provider.delete_endpoint(endpoint)
