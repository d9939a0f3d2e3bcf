"""The provider contract suite (:mod:`cloudnn.testing`) bound to Vertex AI on the emulator.

``can_run`` is true: the contract job really trains (as one emulated
Vertex AI replica), the endpoint really serves through the Vertex adapter.
One provider, spec and trained run serve every class.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gcp_testlib import RunningEmulator

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
from cloudnn_gcp import VertexAIProvider

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gcp_provider(
    emulator: RunningEmulator, tmp_path_factory: pytest.TempPathFactory
) -> VertexAIProvider:
    return VertexAIProvider(
        home=tmp_path_factory.mktemp("contract-home"), **emulator.options()
    )


@pytest.fixture(scope="module")
def gcp_spec(tmp_path_factory: pytest.TempPathFactory) -> Spec:
    return make_contract_spec(tmp_path_factory.mktemp("contract-data"))


@pytest.fixture(scope="module")
def gcp_job(gcp_provider: VertexAIProvider, gcp_spec: Spec) -> ContractJob:
    return run_contract_job(gcp_provider, gcp_spec, timeout=180)


class GCPFixtures(ProviderFixtures):
    @pytest.fixture(scope="class")
    @classmethod
    def provider(cls, gcp_provider: VertexAIProvider) -> VertexAIProvider:
        return gcp_provider

    @pytest.fixture(scope="class")
    @classmethod
    def contract_spec(cls, gcp_spec: Spec) -> Spec:
        return gcp_spec

    @pytest.fixture(scope="class")
    @classmethod
    def contract_job(cls, gcp_job: ContractJob) -> ContractJob:
        return gcp_job

    @pytest.fixture(scope="class")
    @classmethod
    def plan_model_uri(cls) -> str:
        return "gs://cloudnn-emulator/cloudnn/runs/contract-planned/model/"

    @pytest.fixture(scope="class")
    @classmethod
    def remote_data_uri(cls) -> str:
        return "gs://cloudnn-emulator/contract-data/contract.csv"

    @pytest.fixture(scope="class")
    @classmethod
    def job_timeout(cls) -> float:
        return 180.0

    @pytest.fixture
    def state_dirs(self, provider: VertexAIProvider) -> list[Path]:
        from cloudnn.runs import cloudnn_home

        return [Path(cloudnn_home()), Path(provider.home)]


class TestVertexPlans(AbstractPlanTests, GCPFixtures):
    pass


class TestVertexJobs(AbstractJobTests, GCPFixtures):
    pass


class TestVertexEndpoints(AbstractEndpointTests, GCPFixtures):
    pass
