"""The provider contract suite: one set of tests every provider must pass.

It ships in the wheel (like fsspec's ``fsspec.tests.abstract``) and needs
pytest, which ``import cloudnn`` never loads: only importing this package does.
A provider binds it by mixing each abstract class with a
:class:`ProviderFixtures` subclass that says how to get the provider::

    class FakeSageMaker(ProviderFixtures):
        @pytest.fixture(scope="class")
        @classmethod
        def provider(cls, sagemaker_fake): return SageMakerProvider(endpoint_url=sagemaker_fake.url)
    class TestSageMakerPlans(AbstractPlanTests, FakeSageMaker): pass

Every fixture override is class-scoped (a ``@classmethod`` under
``@pytest.fixture(scope="class")``), or wider. Bind :class:`AbstractJobTests` and :class:`AbstractEndpointTests` the same
way. ``tests/test_contract_local.py`` is the reference binding (it shares one
trained run between classes through module-scoped fixtures).

Capability differences are fixtures, not ``if``s: ``capabilities`` (what it
supports; default: all but ``provider.unsupported``), ``can_run`` (False skips
what needs a live job or endpoint), ``contract_spec`` (add ``providers:``
options), ``plan_model_uri``/``remote_data_uri`` (URIs of its own storage),
``known_failures`` (strict xfails naming a reported bug). See
:class:`ProviderFixtures` for the full list and their defaults.

* :class:`AbstractPlanTests`: ``plan_training`` writes nothing and opens no
  socket, is deterministic and JSON data, prices are None or >= 0, and each
  capability in ``provider.unsupported`` is refused at plan time with reasons.
* :class:`AbstractJobTests`: a job reaches SUCCEEDED through :class:`JobState`
  values, a second submit adopts it, log cursors resume without repeats,
  cancel is a no-op on a finished job and ends a running one CANCELLED,
  ``check()`` reports for this provider.
* :class:`AbstractEndpointTests`: ``plan_endpoint`` is pure and deterministic;
  create, invoke (one prediction per instance), create again adopts, delete
  removes it and a second delete is quiet.

Importing this package costs nothing: the suite (and pytest) load when one
of its names is first used, so ``cloudnn.testing.fake`` and
``cloudnn.testing.emulation`` (used by the emulators) never pull in pytest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudnn.testing.abstract import (
        AbstractEndpointTests,
        AbstractJobTests,
        AbstractPlanTests,
    )
    from cloudnn.testing.fixtures import (
        ENDPOINT_CAPABILITIES,
        ContractJob,
        NetworkAccessError,
        ProviderFixtures,
        assert_no_side_effects,
        contract_instances_from_csv,
        log_events,
        make_contract_spec,
        run_contract_job,
        spec_requiring,
        wait_for_endpoint,
        wait_for_terminal,
        write_contract_data,
    )

__all__ = [
    "ENDPOINT_CAPABILITIES",
    "AbstractEndpointTests",
    "AbstractJobTests",
    "AbstractPlanTests",
    "ContractJob",
    "NetworkAccessError",
    "ProviderFixtures",
    "assert_no_side_effects",
    "contract_instances_from_csv",
    "log_events",
    "make_contract_spec",
    "run_contract_job",
    "spec_requiring",
    "wait_for_endpoint",
    "wait_for_terminal",
    "write_contract_data",
]

_ABSTRACT = {"AbstractEndpointTests", "AbstractJobTests", "AbstractPlanTests"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'cloudnn.testing' has no attribute {name!r}")
    import pytest

    # the asserts in these modules explain themselves only if pytest rewrites
    # them, which it does for modules registered before their first import
    pytest.register_assert_rewrite(
        "cloudnn.testing.abstract", "cloudnn.testing.fixtures"
    )
    module = "abstract" if name in _ABSTRACT else "fixtures"
    return getattr(importlib.import_module(f"cloudnn.testing.{module}"), name)
