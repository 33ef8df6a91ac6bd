"""Secret settings are redacted by their type: every field whose name says it holds a secret is
a ``SecretStr``, and neither `tessera settings` nor `tessera doctor` ever prints one."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import SecretStr

from tessera.errors import ConfigurationError
from tessera.settings import Settings, env_name, load_settings
from tests.support.cli import run_tessera
from tests.support.server import free_port

SECRET_WORDS = frozenset({"token", "password", "passwd", "secret", "salt", "key", "credentials"})
# Names with a secret-sounding word that hold no secret, each with why.
NOT_SECRETS = {
    "token_ttl_seconds": "a lifetime in seconds",
    "merge_key_limit": "a count of values",
}
# A salt under Tracardi's name, which does not say so.
SECRETS_UNDER_OTHER_NAMES = frozenset({"auto_profile_merging"})


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(env_name(name), raising=False)


def _words(name: str) -> set[str]:
    return set(re.split(r"[_\W]+", name.lower()))


def _secret_looking(name: str) -> bool:
    return bool((_words(name) | _words(env_name(name))) & SECRET_WORDS)


def _is_secret_str(name: str) -> bool:
    annotation = Settings.model_fields[name].annotation
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def secret_fields() -> set[str]:
    """Fields that hold a secret: by their names, and by their type."""
    looking = {name for name in Settings.model_fields if _secret_looking(name)}
    typed = {name for name in Settings.model_fields if _is_secret_str(name)}
    return (looking - set(NOT_SECRETS)) | SECRETS_UNDER_OTHER_NAMES | typed


def test_every_setting_named_like_a_secret_is_a_secret_str() -> None:
    looking = secret_fields()
    assert len(looking) >= 7, "the scan found too few secrets: the word list is broken"
    plain = sorted(env_name(name) for name in looking if not _is_secret_str(name))
    assert not plain, f"secret settings not typed SecretStr: {plain}"
    # The exemptions must still exist, or they hide nothing and should go.
    assert set(NOT_SECRETS) <= set(Settings.model_fields)


def test_secret_values_are_shown_hidden_and_url_passwords_masked() -> None:
    from tessera.settings import shown_settings

    settings = load_settings(
        PULSAR_AUTH_TOKEN="jwt-marker-value",
        ELASTIC_HOST="https://elastic:pw-marker@es1:9200,https://es2:9200",
    )
    shown = shown_settings(settings)
    assert shown["pulsar_auth_token"] == "(hidden)"
    assert shown["installation_token"] is None
    assert shown["elastic_host"] == "https://elastic:***@es1:9200,https://es2:9200"
    assert "marker" not in repr(settings)


def _marked_environment(tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    """Every secret set to a marker of its own, and every service it unlocks pointed at a
    closed port, so that the doctor tries them all and reports their failures."""
    closed = free_port()
    markers: dict[str, str] = {}
    for name in sorted(secret_fields()):
        variable = env_name(name)
        markers[variable] = f"marker-{variable.lower()}-0123456789abcdef"
    env = {
        **markers,
        "TESSERA_DATA_DIR": str(tmp_path / "data"),
        "MYSQL_HOST": "127.0.0.1",
        "MYSQL_PORT": str(closed),
        "MYSQL_USERNAME": "tessera",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(closed),
        "ELASTIC_HOST": f"http://elastic:url-marker-password@127.0.0.1:{closed}",
        "ELASTIC_USERNAME": "elastic",
        "PULSAR_HOST": f"pulsar://127.0.0.1:{closed}",
        "TESSERA_INGEST_MODE": "async",
    }
    return env, [*markers.values(), "url-marker-password"]


def test_settings_and_doctor_never_print_a_secret(tmp_path: Path) -> None:
    env, markers = _marked_environment(tmp_path)
    assert len(markers) >= 7
    not_inherited = ("TESSERA_", "MYSQL_", "REDIS_", "ELASTIC_", "PULSAR_", "KAFKA_")
    listed = run_tessera(env, "settings", not_inherited=not_inherited, timeout=60)
    assert listed.returncode == 0, listed.stderr
    doctor = run_tessera(env, "doctor", "--json", not_inherited=not_inherited, timeout=120)
    assert '"checks"' in doctor.stdout, doctor.stderr
    for output in (listed.stdout, listed.stderr, doctor.stdout, doctor.stderr):
        shown = [marker for marker in markers if marker in output]
        assert not shown, f"printed: {shown}\n{output}"
    assert "pulsar_auth_token = (hidden)" in listed.stdout


@pytest.mark.parametrize("variable", ["INSTALLATION_TOKEN", "AUTO_PROFILE_MERGING"])
def test_a_refused_secret_is_never_quoted(variable: str) -> None:
    with pytest.raises(Exception) as raised:
        load_settings(TESSERA_ENV="production", **{variable: "short-marker"})
    assert "short-marker" not in str(raised.value)


def test_stored_headers_are_an_allow_list_a_setting_extends() -> None:
    from tessera.collect.http import STORED_HEADERS, stored_headers

    settings = load_settings(TESSERA_STORED_HEADERS=" X-Shop-Region , x-experiment")
    allowed = STORED_HEADERS | settings.stored_header_names
    scope = {
        "headers": [
            (b"user-agent", b"agent/1"),
            (b"x-shop-region", b"eu"),
            (b"x-experiment", b"b"),
            (b"x-auth-token", b"secret-1"),
            (b"api-key", b"secret-2"),
            (b"x-access-token", b"secret-3"),
            (b"x-forwarded-for", b"10.0.0.1"),
        ]
    }
    assert stored_headers(scope, allowed) == {
        "user-agent": "agent/1",
        "x-shop-region": "eu",
        "x-experiment": "b",
    }


@pytest.mark.parametrize(
    "name",
    ["Authorization", "X-Auth-Token", "Api-Key", "Cookie", "X-CSRF", "X-Session-Id", "XAuthToken"],
)
def test_a_credential_header_cannot_be_added_to_the_stored_ones(name: str) -> None:
    with pytest.raises(ConfigurationError, match="TESSERA_STORED_HEADERS"):
        load_settings(TESSERA_STORED_HEADERS=f"x-region,{name}")
