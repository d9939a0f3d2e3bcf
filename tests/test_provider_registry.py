"""The provider registry: lazy names, entry points, registration, options."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudnn import registry
from cloudnn.client import Client
from cloudnn.errors import ProviderNotInstalledError, SpecError
from cloudnn.local import LocalProvider
from cloudnn.testing.fake import FakeProvider


@pytest.fixture(autouse=True)
def clean_registrations() -> Iterator[None]:
    yield
    for name in ("fake", "local-copy", "aws"):
        registry.unregister_provider(name)


def test_register_and_get_with_options(tmp_path: Path) -> None:
    registry.register_provider("fake", FakeProvider)
    fake = registry.get_provider("fake", home=tmp_path, epoch_seconds=1.0)
    assert isinstance(fake, FakeProvider)
    assert (fake.home, fake.epoch_seconds) == (tmp_path, 1.0)
    assert "fake" in registry.available_providers()
    assert "fake" in registry.known_providers()


def test_register_by_import_string_is_lazy() -> None:
    registry.register_provider("fake", "cloudnn.testing.fake:FakeProvider")
    assert registry.provider_class("fake") is FakeProvider


def test_a_second_registration_needs_clobber() -> None:
    registry.register_provider("fake", FakeProvider)
    with pytest.raises(ValueError, match="already registered"):
        registry.register_provider("fake", FakeProvider)
    registry.register_provider("fake", "cloudnn.local:LocalProvider", clobber=True)
    assert registry.provider_class("fake") is LocalProvider


def test_an_entry_point_name_needs_clobber_too() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register_provider("local", FakeProvider)


def test_registration_wins_over_entry_points_and_known_names() -> None:
    # "aws" is a known name (and an entry point once cloudnn-aws is installed)
    registry.register_provider("aws", FakeProvider, clobber=True)
    assert registry.provider_class("aws") is FakeProvider


def test_entry_points_win_over_the_built_in_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        registry, "_entry_points", lambda: {"gcp": "cloudnn.testing.fake:FakeProvider"}
    )
    assert registry.provider_class("gcp") is FakeProvider


def test_a_missing_distribution_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "_entry_points", lambda: {})
    monkeypatch.setitem(
        registry._KNOWN,
        "azure",
        ("cloudnn_nowhere:Provider", 'pip install "cloudnn[azure]"'),
    )
    with pytest.raises(ProviderNotInstalledError) as info:
        registry.get_provider("azure")
    assert info.value.hint == 'pip install "cloudnn[azure]"'
    assert info.value.exit_code == 2


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ProviderNotInstalledError, match="known: .*local"):
        registry.get_provider("nope")


def test_local_is_reached_through_the_registry_with_the_clients_home(
    tmp_path: Path,
) -> None:
    client = Client(home=tmp_path, quiet=True)
    local = client.provider("local")
    assert isinstance(local, LocalProvider) and local.home == tmp_path
    assert client.provider("local") is local  # built once


def test_client_options_reach_the_provider(tmp_path: Path) -> None:
    registry.register_provider("fake", FakeProvider)
    client = Client(home=tmp_path, providers={"fake": {"epoch_seconds": 2.5}})
    assert client.provider("fake").epoch_seconds == 2.5  # type: ignore[attr-defined]


def test_unknown_provider_options_are_refused(tmp_path: Path) -> None:
    client = Client(home=tmp_path, providers={"local": {"regoin": "x"}})
    with pytest.raises(SpecError) as info:
        client.provider("local")
    assert "regoin" in str(info.value)
