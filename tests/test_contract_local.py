"""The provider contract suite (:mod:`cloudnn.testing`) bound to the local provider.

One module-scoped home, spec and trained run serve every class, so the whole
file trains one model (plus two short jobs the cancel tests stop).
"""

from __future__ import annotations

import pytest

from cloudnn.local import LocalProvider
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

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_provider(tmp_path_factory: pytest.TempPathFactory) -> LocalProvider:
    return LocalProvider(home=tmp_path_factory.mktemp("contract-home"))


@pytest.fixture(scope="module")
def local_spec(tmp_path_factory: pytest.TempPathFactory) -> Spec:
    return make_contract_spec(tmp_path_factory.mktemp("contract-data"))


@pytest.fixture(scope="module")
def local_job(local_provider: LocalProvider, local_spec: Spec) -> ContractJob:
    return run_contract_job(local_provider, local_spec, timeout=120)


class LocalFixtures(ProviderFixtures):
    @pytest.fixture(scope="class")
    @classmethod
    def provider(cls, local_provider: LocalProvider) -> LocalProvider:
        return local_provider

    @pytest.fixture(scope="class")
    @classmethod
    def contract_spec(cls, local_spec: Spec) -> Spec:
        return local_spec

    @pytest.fixture(scope="class")
    @classmethod
    def contract_job(cls, local_job: ContractJob) -> ContractJob:
        return local_job

    @pytest.fixture(scope="class")
    @classmethod
    def job_timeout(cls) -> float:
        return 120.0


class TestLocalPlans(AbstractPlanTests, LocalFixtures):
    pass


class TestLocalJobs(AbstractJobTests, LocalFixtures):
    pass


class TestLocalEndpoints(AbstractEndpointTests, LocalFixtures):
    pass
