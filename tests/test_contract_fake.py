"""The provider contract suite bound to the in-memory fake provider.

The fake runs in real time here, with sub-second phases, so the very tests
every provider passes also check the fake the Client's tests rely on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudnn.testing import (
    AbstractEndpointTests,
    AbstractJobTests,
    AbstractPlanTests,
    ProviderFixtures,
)
from cloudnn.testing.fake import FakeProvider


@pytest.fixture(scope="module")
def fake_provider(tmp_path_factory: pytest.TempPathFactory) -> FakeProvider:
    fake = FakeProvider(
        home=tmp_path_factory.mktemp("fake-home"),
        queued_seconds=0.05,
        provisioning_seconds=0.05,
        epoch_seconds=0.1,
        stop_seconds=0.1,
        endpoint_seconds=0.1,
    )
    fake.poll_interval = 0.02
    return fake


class FakeFixtures(ProviderFixtures):
    @pytest.fixture(scope="class")
    @classmethod
    def provider(cls, fake_provider: FakeProvider) -> FakeProvider:
        return fake_provider

    @pytest.fixture(scope="class")
    @classmethod
    def job_timeout(cls) -> float:
        return 30.0

    @pytest.fixture(scope="class")
    @classmethod
    def plan_model_uri(cls) -> str:
        return "fake://models/never-trained"


class TestFakePlans(AbstractPlanTests, FakeFixtures):
    pass


class TestFakeJobs(AbstractJobTests, FakeFixtures):
    pass


class TestFakeEndpoints(AbstractEndpointTests, FakeFixtures):
    pass


def test_fake_keeps_no_state_on_disk(fake_provider: FakeProvider) -> None:
    assert not any(Path(fake_provider.home).iterdir())
