"""Config files are validated with one clear line per problem, naming file and key; every shipped
YAML loads into its pydantic model with the values the file holds."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from configs import CONFIG_DIR, ConfigError, load_config
from configs.settings import Settings, load_settings


def _family_config(command: str) -> Callable[[], Any]:
    def load() -> Any:
        from training.families import family
        from training.pipeline import load_family_config

        return load_family_config(family(command))

    return load


def _marketplace() -> Any:
    from features.simulator import MarketplaceConfig

    return load_config("marketplace", MarketplaceConfig)


def _retrain() -> Any:
    from training.retrain import RetrainConfig

    return load_config("retrain", RetrainConfig)


def _schedule() -> Any:
    from training.schedule import load_schedule

    return load_schedule()


def _monitoring() -> Any:
    from training.monitoring.config import load_monitoring_config

    return load_monitoring_config()


# every YAML in configs/ and the loader its consumer uses (a new file must be added here)
LOADERS: dict[str, Callable[[], Any]] = {
    "platform.yaml": lambda: load_config("platform", Settings),
    "marketplace.yaml": _marketplace,
    "recommender.yaml": _family_config("recommender"),
    "forecaster.yaml": _family_config("forecaster"),
    "bidder.yaml": _family_config("bidder"),
    "retrain.yaml": _retrain,
    "schedule.yaml": _schedule,
    "monitoring.yaml": _monitoring,
}


def _same_values(written: Any, loaded: Any, where: str) -> list[str]:
    """Where a value the YAML file holds differs from what its model loaded (keys the file leaves
    out take the model's defaults and are not compared)."""
    if isinstance(written, dict):
        if not isinstance(loaded, dict):
            return [f"{where}: {loaded!r} is not a mapping"]
        return [
            problem
            for key, value in written.items()
            for problem in _same_values(value, loaded.get(key, "<missing>"), f"{where}.{key}")
        ]
    if isinstance(written, list):
        if not isinstance(loaded, list | tuple) or len(loaded) != len(written):
            return [f"{where}: {loaded!r} != {written!r}"]
        return [
            problem
            for index, (a, b) in enumerate(zip(written, loaded, strict=True))
            for problem in _same_values(a, b, f"{where}[{index}]")
        ]
    if isinstance(loaded, Path):
        loaded = str(loaded)
    return [] if loaded == written else [f"{where}: loaded {loaded!r}, the file says {written!r}"]


def test_every_yaml_in_configs_is_checked_here() -> None:
    shipped = sorted(path.name for path in CONFIG_DIR.glob("*.y*ml"))
    # the Serve configs (models in the ingress; models as deployments; HAProxy in front) are checked below
    assert shipped == sorted([*LOADERS, "serving.yaml", "serving-split.yaml", "serving-haproxy.yaml"])


def test_serving_haproxy_yaml_is_serving_yaml_but_for_its_front_door() -> None:
    from serving.settings import AppArgs, load_serving_config

    proxy, haproxy = load_serving_config("serving"), load_serving_config("serving-haproxy")
    fronts = [
        AppArgs.model_validate(config["applications"][0]["args"]).front_door for config in (proxy, haproxy)
    ]
    assert fronts == ["ray-proxy", "haproxy"]
    del haproxy["applications"][0]["args"]["front_door"]
    assert haproxy == proxy, "serving-haproxy.yaml drifted from serving.yaml beyond its front door"


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_shipped_yaml_loads_with_the_values_it_holds(name: str) -> None:
    written = yaml.safe_load((CONFIG_DIR / name).read_text())
    loaded = LOADERS[name]()
    assert _same_values(written, loaded.model_dump(), name.removesuffix(".yaml")) == []


def test_shipped_values_mean_what_the_comments_say(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRADEWIND_DATA_DIR", raising=False)
    monkeypatch.delenv("TRADEWIND_MODE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = load_settings()
    assert settings.mode == "embedded" and settings.ray_address is None
    assert settings.root == (CONFIG_DIR.parent / "data").resolve()
    # tracking_uri null in embedded mode: SQLite under <data>/mlflow
    assert settings.mlflow_tracking_uri == f"sqlite:///{settings.root / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert settings.mlflow_tracking_uri == "http://tracking.example:5000"

    marketplace = LOADERS["marketplace.yaml"]()
    assert (marketplace.seed, marketplace.start_date, marketplace.end_date) == (
        2026,
        dt.date(2024, 11, 1),
        dt.date(2026, 10, 31),
    )
    assert [market.market_id for market in marketplace.markets] == ["US", "GB", "DE", "BR", "JP", "AE", "IN"]

    retrain = LOADERS["retrain.yaml"]()
    assert retrain.gate_for("forecaster").margin == 0.02, "the forecaster's own gate"
    assert retrain.gate_for("bidder") == retrain.gate and retrain.gate.margin == 0.01, "the default gate"

    schedule = LOADERS["schedule.yaml"]()
    assert [(job.name, job.cadence, job.when) for job in schedule.jobs] == [
        ("forecaster", "0 2 * * *", "always"),
        ("bidder", "0 3 * * *", "always"),
        ("recommender", "0 4 * * 1", "drift"),
    ]
    assert schedule.job("recommender").timeout_minutes == 240

    monitoring = LOADERS["monitoring.yaml"]()
    assert (monitoring.thresholds.feature_psi.warn, monitoring.thresholds.feature_psi.alert) == (0.1, 0.25)

    recommender = LOADERS["recommender.yaml"]()
    assert (recommender.evaluation.k, recommender.serving.default_k, recommender.seed) == (10, 10, 42)
    assert LOADERS["forecaster.yaml"]().horizon == 28
    assert LOADERS["bidder.yaml"]().data.test_days == 7


@pytest.mark.parametrize(("name", "answering"), [("serving", "ingress"), ("serving-split", "deployments")])
def test_serving_yaml_validates_ray_and_tradewind_keys(name: str, answering: str) -> None:
    from serving.settings import (
        MODEL_DEPLOYMENTS,
        AppArgs,
        application,
        endpoint_settings,
        ingress_user_config,
        load_serving_config,
    )

    config = load_serving_config(name)
    assert [app["name"] for app in config["applications"]] == ["tradewind", "echo"]
    tradewind = application(config, "serving.app:build_app")
    assert AppArgs.model_validate(tradewind["args"]) == AppArgs(
        platform_config="platform", data_dir=None, answering=answering
    )
    deployments = {deployment["name"]: deployment for deployment in tradewind["deployments"]}
    if answering == "ingress":  # the model endpoints' settings are sections of the Ingress's user_config
        assert set(deployments) == {"Ingress"}
        sections = ingress_user_config(deployments["Ingress"]["user_config"], name)
        bidder, recommender = sections["bidder"], sections["recommender"]
    else:
        assert set(MODEL_DEPLOYMENTS.values()) <= set(deployments)
        bidder = endpoint_settings(deployments["Bidder"]["user_config"])
        recommender = endpoint_settings(deployments["Recommender"]["user_config"])
    assert (bidder.challenger_share, bidder.reservation_ttl_s, bidder.batching.max_batch_size) == (
        0.1,
        120,
        16,
    )
    assert (recommender.alias, recommender.challenger_alias) == ("champion", "challenger")
    # measured (issue 14's notes): 8 admits a closed loop of 8 callers at full speed; 16 only queued longer
    assert (recommender.max_in_flight, bidder.max_in_flight) == (
        (8, 8) if answering == "ingress" else (16, 16)
    )


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("serving", r"deployments\[0\]\.user_config\.recommender"),
        ("serving-split", r"deployments\[1\]\.user_config"),
    ],
)
def test_serving_yaml_typo_is_named(name: str, where: str, tmp_path: Path) -> None:
    from serving.settings import load_serving_config

    config = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    deployment = config["applications"][0]["deployments"][0 if name == "serving" else 1]
    settings = deployment["user_config"]["recommender"] if name == "serving" else deployment["user_config"]
    settings["polling_interval_s"] = 5
    path = tmp_path / "serving.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=rf"{where}: unknown key 'polling_interval_s'"):
        load_serving_config(path)


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
