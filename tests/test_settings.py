"""Settings: defaults < decisionloop.yaml < DECISIONLOOP_* environment < explicit arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from decisionloop.errors import ConfigError
from decisionloop.settings import DuckDBSourceConfig, MemorySourceConfig, load_settings


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings().port == 8000
    (tmp_path / "decisionloop.yaml").write_text(
        "port: 9001\nhost: 0.0.0.0\nsource: {type: memory}\n"
    )
    settings = load_settings()
    assert (settings.port, settings.host) == (9001, "0.0.0.0")
    assert isinstance(settings.source, MemorySourceConfig)
    monkeypatch.setenv("DECISIONLOOP_PORT", "9002")
    monkeypatch.setenv("DECISIONLOOP_SOURCE__TYPE", "duckdb")
    monkeypatch.setenv("DECISIONLOOP_SOURCE__MAX_GROUP", "64")
    settings = load_settings()
    assert settings.port == 9002
    assert settings.source == DuckDBSourceConfig(max_group=64)
    assert load_settings(port=9003).port == 9003
    assert settings.source_path() == Path(".decisionloop/source.duckdb")


def test_bad_settings_name_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DECISIONLOOP_PORT", "eighty")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.code == "DL100"
    assert [p.where for p in caught.value.problems] == ["port"]
    monkeypatch.delenv("DECISIONLOOP_PORT")
    (tmp_path / "decisionloop.yaml").write_text("source: {type: cassandra}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "source" in caught.value.problems[0].where
