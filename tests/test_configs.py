"""Config files are validated with one clear line per problem, naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs import CONFIG_DIR, ConfigError, load_config
from configs.settings import Settings, load_settings


def test_every_shipped_yaml_config_loads() -> None:
    settings = load_settings()
    assert settings.mode == "embedded"
    assert settings.mlflow_tracking_uri.startswith("sqlite:///") or settings.mlflow_tracking_uri


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "platform.yaml"
    path.write_text("mode: embedded\nmlflow:\n  experimant: x\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, Settings)
    assert str(error.value) == f"{path}: unknown key 'mlflow.experimant'"


def test_wrong_value_is_named_with_what_was_given(tmp_path: Path) -> None:
    path = tmp_path / "platform.yaml"
    path.write_text("mode: cluster\n")
    expected = r"platform.yaml: key 'mode': .*'embedded' or 'scaleout'.*'cluster'"
    with pytest.raises(ConfigError, match=expected):
        load_config(path, Settings)


def test_missing_file_and_broken_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", Settings)
    broken = tmp_path / "broken.yaml"
    broken.write_text("mode: [embedded\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken, Settings)


def test_environment_overrides_and_dataset_workspaces(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRADEWIND_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TRADEWIND_MODE", "scaleout")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = load_settings()
    assert settings.root == tmp_path
    assert settings.mode == "scaleout"
    assert settings.mlflow_tracking_uri == settings.scaleout.mlflow_tracking_uri
    assert settings.for_dataset("walmart").contract_dir == tmp_path / "datasets" / "walmart" / "contract"
    monkeypatch.setenv("TRADEWIND_MODE", "sideways")
    with pytest.raises(ConfigError, match="mode"):
        load_settings()


def test_config_dir_holds_only_yaml_and_the_loader() -> None:
    for path in CONFIG_DIR.iterdir():
        assert path.suffix in (".yaml", ".py") or path.name == "__pycache__", path
