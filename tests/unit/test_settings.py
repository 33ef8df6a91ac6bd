"""Settings: names, defaults, validation messages, and the generated docs table."""

from __future__ import annotations

import math
import secrets
from pathlib import Path

import pytest

from tessera.errors import ConfigurationError
from tessera.settings import (
    Settings,
    env_name,
    estimated_secret_bits,
    is_secret_field,
    load_settings,
    weak_secret_problem,
)
from tessera.settings_doc import settings_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(env_name(name), raising=False)


def test_docs_table_matches_the_code() -> None:
    assert DOCS.read_text() == settings_markdown(), (
        "docs/settings.md is out of date: run `tessera settings --markdown > docs/settings.md`"
    )


def test_every_setting_is_documented_in_the_table() -> None:
    table = DOCS.read_text()
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
        assert f"| `{env_name(name)}` |" in table, f"{env_name(name)} missing from docs"


def test_defaults_follow_the_guide() -> None:
    settings = load_settings()
    assert settings.logging_level.value == "WARNING"
    assert settings.data_dir == Path(".tessera")
    assert settings.writer_batch_size == 500
    assert settings.api_docs is True


def test_tracardi_names_and_yes_no(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_DOCS", "no")
    monkeypatch.setenv("LOGGING_LEVEL", "info")
    monkeypatch.setenv("KEEP_PROFILE_IN_CACHE_FOR", "60")
    settings = load_settings()
    assert settings.api_docs is False
    assert settings.logging_level.value == "INFO"
    assert settings.keep_profile_in_cache_for == 60


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_MAX_BODY_BYTES", "lots")
    with pytest.raises(ConfigurationError, match="TESSERA_MAX_BODY_BYTES"):
        load_settings()


def test_secret_values_never_appear_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_ENV", "production")
    monkeypatch.setenv("INSTALLATION_TOKEN", "tracardi")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "INSTALLATION_TOKEN" in caught.value.message
    assert "tracardi'" not in caught.value.message


def test_production_accepts_strong_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_ENV", "production")
    monkeypatch.setenv("INSTALLATION_TOKEN", secrets.token_urlsafe(32))
    monkeypatch.setenv("TESSERA_ADMIN_PASSWORD", "correct horse battery staple")
    assert load_settings().is_production


@pytest.mark.parametrize(
    "weak",
    [
        "aaaaaaaaaaaaaaaa",
        "x" * 64,
        "abcdefghijklmnopqrstuvwxyz",
        "9876543210987654321",
        "passwordpassword",
        "abcabcabcabcabcabcabc",
        "0123456789012345",
    ],
)
@pytest.mark.parametrize("variable", ["INSTALLATION_TOKEN", "TESSERA_ADMIN_PASSWORD"])
def test_production_refuses_predictable_secrets_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch, variable: str, weak: str
) -> None:
    monkeypatch.setenv("TESSERA_ENV", "production")
    monkeypatch.setenv("INSTALLATION_TOKEN", secrets.token_urlsafe(32))
    monkeypatch.setenv(variable, weak)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.message.startswith(f"{variable}: ")
    assert "predictable" in caught.value.message
    assert weak not in caught.value.message


def test_secret_strength_is_estimated_from_classes_runs_and_repeats() -> None:
    assert estimated_secret_bits("aaaaaaaaaaaaaaaa") == pytest.approx(math.log2(26))
    assert estimated_secret_bits("aB3$") == pytest.approx(4 * math.log2(95))
    # Random 32-character tokens are far above the bar, every time.
    assert min(estimated_secret_bits(secrets.token_urlsafe(24)) for _ in range(200)) > 120
    assert weak_secret_problem(secrets.token_urlsafe(24)) is None


def test_trusted_proxies_are_addresses_or_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_TRUSTED_PROXIES", " 10.0.0.5 , 172.16.0.0/12,fd00::/8 ")
    settings = load_settings()
    assert [str(network) for network in settings.trusted_proxy_networks] == [
        "10.0.0.5/32",
        "172.16.0.0/12",
        "fd00::/8",
    ]
    monkeypatch.delenv("TESSERA_TRUSTED_PROXIES")
    assert load_settings().trusted_proxy_networks == ()
    monkeypatch.setenv("TESSERA_TRUSTED_PROXIES", "10.0.0.5, proxy.internal")
    with pytest.raises(ConfigurationError, match=r"TESSERA_TRUSTED_PROXIES.*proxy\.internal"):
        load_settings()


SECRET_VARIABLES = [env_name(name) for name in Settings.model_fields if is_secret_field(name)]


@pytest.mark.parametrize("variable", SECRET_VARIABLES)
def test_production_refuses_a_well_known_default_in_every_secret_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # Every secret setting, found by its type: one added later is covered without a list.
    monkeypatch.setenv("TESSERA_ENV", "production")
    monkeypatch.setenv("INSTALLATION_TOKEN", secrets.token_urlsafe(32))
    monkeypatch.setenv(variable, "changeme")
    with pytest.raises(ConfigurationError, match=variable) as caught:
        load_settings()
    assert "changeme" not in caught.value.message
    monkeypatch.setenv(variable, secrets.token_urlsafe(32))
    assert load_settings().is_production


def test_every_secret_setting_is_checked() -> None:
    assert len(SECRET_VARIABLES) >= 7  # guards the parametrisation above against an empty list
    assert {"MYSQL_PASSWORD", "PULSAR_AUTH_TOKEN", "AUTO_PROFILE_MERGING"} <= set(SECRET_VARIABLES)
