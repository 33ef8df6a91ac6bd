"""How many API processes `tessera serve` runs, and the refusal of several without the servers
they must share (the processes themselves: tests/e2e/test_api_workers.py)."""

from __future__ import annotations

import pytest

from tessera.errors import ConfigurationError
from tessera.serving.processes import api_process_count, usable_cpus
from tessera.settings import Settings, env_name, load_settings

SERVERS = {
    "ELASTIC_HOST": "http://127.0.0.1:9200",
    "MYSQL_HOST": "127.0.0.1",
    "REDIS_HOST": "127.0.0.1",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(env_name(name), raising=False)


def settings_with(monkeypatch: pytest.MonkeyPatch, **variables: str) -> Settings:
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    return load_settings()


def test_one_process_by_default_in_the_embedded_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    assert api_process_count(settings_with(monkeypatch)) == 1
    # Only some servers set: still state inside the process, still one.
    assert api_process_count(settings_with(monkeypatch, REDIS_HOST="127.0.0.1")) == 1


def test_one_process_per_usable_cpu_by_default_in_the_distributed_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_with(monkeypatch, **SERVERS)
    assert api_process_count(settings) == usable_cpus() >= 1


def test_the_command_line_overrides_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_with(monkeypatch, TESSERA_API_WORKERS="3", **SERVERS)
    assert api_process_count(settings) == 3
    assert api_process_count(settings, 5) == 5


def test_several_processes_without_the_shared_servers_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_with(monkeypatch, TESSERA_API_WORKERS="2", REDIS_HOST="127.0.0.1")
    with pytest.raises(ConfigurationError) as refused:
        api_process_count(settings)
    message = refused.value.message
    assert "TESSERA_API_WORKERS (or --workers) is 2" in message
    assert "ELASTIC_HOST and MYSQL_HOST are not set" in message
    assert "(REDIS_HOST)" not in message  # set: not among what is missing
    # One process is what the embedded mode is made for.
    assert api_process_count(settings, 1) == 1


def test_a_bad_count_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("0", "-1", "many", "257"):
        monkeypatch.setenv("TESSERA_API_WORKERS", bad)
        with pytest.raises(ConfigurationError, match="TESSERA_API_WORKERS"):
            load_settings()
