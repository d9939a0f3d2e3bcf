"""The cloudnn provider contract suite, bound to SageMakerProvider on the emulator.

Jobs really train (``can_run`` is true): one module-scoped contract job serves
every class, plus the two short jobs the cancel tests stop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aws_testlib import RunningEmulator

from cloudnn.spec import Spec
from cloudnn.testing import (
    AbstractEndpointTests,
    AbstractJobTests,
    AbstractPlanTests,
    ContractJob,
    ProviderFixtures,
    make_contract_spec,
    run_contract_job,
)
from cloudnn_aws import SageMakerProvider

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def aws_provider(
    emulator: RunningEmulator, tmp_path_factory: pytest.TempPathFactory
) -> SageMakerProvider:
    return SageMakerProvider(
        home=tmp_path_factory.mktemp("contract-home"), **emulator.options()
    )


@pytest.fixture(scope="module")
def aws_spec(tmp_path_factory: pytest.TempPathFactory) -> Spec:
    return make_contract_spec(tmp_path_factory.mktemp("contract-data"))


@pytest.fixture(scope="module")
def aws_job(aws_provider: SageMakerProvider, aws_spec: Spec) -> Iterator[ContractJob]:
    yield run_contract_job(aws_provider, aws_spec, timeout=180)


class AwsFixtures(ProviderFixtures):
    @pytest.fixture(scope="class")
    @classmethod
    def provider(cls, aws_provider: SageMakerProvider) -> SageMakerProvider:
        return aws_provider

    @pytest.fixture(scope="class")
    @classmethod
    def contract_spec(cls, aws_spec: Spec) -> Spec:
        return aws_spec

    @pytest.fixture(scope="class")
    @classmethod
    def contract_job(cls, aws_job: ContractJob) -> ContractJob:
        return aws_job

    @pytest.fixture(scope="class")
    @classmethod
    def plan_model_uri(cls) -> str:
        return "s3://cloudnn-emulator/cloudnn/jobs/planned-only/output/model.tar.gz"

    @pytest.fixture(scope="class")
    @classmethod
    def remote_data_uri(cls) -> str:
        return "s3://cloudnn-emulator/datasets/contract.csv"

    @pytest.fixture(scope="class")
    @classmethod
    def job_timeout(cls) -> float:
        return 180.0


class TestSageMakerPlans(AbstractPlanTests, AwsFixtures):
    pass


class TestSageMakerJobs(AbstractJobTests, AwsFixtures):
    def test_job_went_through_sagemaker_states(self, contract_job: ContractJob) -> None:
        vendor = [s.vendor_state for s in contract_job.statuses]
        assert any(v.startswith("InProgress/") for v in vendor), vendor
        assert vendor[-1] == "Completed/Completed"

    def test_metrics_come_from_the_job_output(self, contract_job: ContractJob) -> None:
        metrics: dict[str, Any] = dict(contract_job.final.metrics)
        assert metrics["headline"]["metric"] == "accuracy"
        assert metrics["epochs_run"] == 1


class TestSageMakerEndpoints(AbstractEndpointTests, AwsFixtures):
    pass
