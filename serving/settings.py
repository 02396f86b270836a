"""Tradewind's own serving settings, validated with pydantic.

The Ray Serve config file (`configs/serving.yaml`) is Ray's format: `serve run` and `serve deploy`
read it as it is. Tradewind's part of it is validated here, once when the file is loaded
(`load_serving_config`, which names the file and key of any mistake) and again by each replica:

- the application's `args` (`AppArgs`): which platform config and data folder to serve from;
- each model deployment's `user_config` (`EndpointSettings`): aliases, the champion/challenger
  split, how often the registry is polled, request batching, reference data refresh. A change to
  it reaches running replicas through `reconfigure`, without a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from configs import ConfigError, StrictModel, format_validation_error, read_config_file, validate_config
from configs.families import FAMILY_NAMES
from configs.settings import Settings, load_settings
from serving.auth import AuthSettings
from serving.front_door import FrontDoor
from tracking.registry import CHALLENGER, CHAMPION

SERVING_CONFIG = "serving"
# the same application with the models as deployments of their own (answering: deployments)
SPLIT_SERVING_CONFIG = "serving-split"
# deployment names in code and in configs/serving.yaml
INGRESS = "Ingress"
ECHO = "Echo"
MODEL_DEPLOYMENTS = {family.endpoint: family.deployment for family in FAMILY_NAMES.values()}


class BatchingSettings(StrictModel):
    """`ray.serve.batch` for a model deployment: requests that arrive together share one Feast
    lookup. A batch of 1 with no wait turns batching off."""

    max_batch_size: int = Field(8, ge=1, le=256)
    batch_wait_timeout_s: float = Field(0.002, ge=0.0, le=1.0)


class EndpointSettings(StrictModel):
    """The `user_config` of one model deployment."""

    alias: str = CHAMPION
    challenger_alias: str = CHALLENGER
    # share of requests answered by the challenger when a version holds that alias (0 = never)
    challenger_share: float = Field(0.0, ge=0.0, le=1.0)
    poll_interval_s: float = Field(10.0, gt=0.0, le=3600.0)
    reference_refresh_s: float = Field(300.0, gt=0.0)
    batching: BatchingSettings = BatchingSettings()
    # bids only: an unsettled reservation stops counting against the budget after this long
    reservation_ttl_s: float = Field(120.0, gt=0.0)
    # a registry (MLflow server) call gives up after this long, with this many retries: the poll
    # itself is the retry loop, so a server that is down is reported within about one interval
    # instead of after MLflow's default minutes of backoff, and the loaded models keep serving
    registry_timeout_s: int = Field(5, ge=1, le=300)
    registry_retries: int = Field(0, ge=0, le=10)
    # admission (serving/admission.py): requests answered at once per replica; one more gets 503
    # with Retry-After at once instead of a place in a queue that outlasts its caller
    max_in_flight: int = Field(32, ge=1, le=10_000)
    retry_after_s: int = Field(1, ge=0, le=60)
    # the caller's deadline when it sends no X-Deadline-Ms (0: none): past it, dropped before model work
    deadline_ms: float = Field(1000.0, ge=0.0, le=600_000.0)


class AppArgs(StrictModel):
    """The `args` of the tradewind application in configs/serving.yaml."""

    platform_config: str = "platform"
    data_dir: str | None = None  # null: configs/platform.yaml (or TRADEWIND_DATA_DIR)
    # ingress: the models answer inside the ingress replica (one hop; each model's user_config is a
    # section of the ingress's); deployments: one deployment per model, scaled apart (two hops)
    answering: Literal["ingress", "deployments"] = "ingress"
    auth: AuthSettings = AuthSettings()  # API keys: keys file, rate per key, body size limit
    # what answers HTTP in front of the replicas when Tradewind starts Ray (serving/front_door.py):
    # Ray's Python proxy, or HAProxy forwarding straight to the ingress replicas
    front_door: FrontDoor = "ray-proxy"

    def settings(self) -> Settings:
        settings = load_settings(self.platform_config)
        if self.data_dir:
            settings = settings.model_copy(update={"data_dir": Path(self.data_dir)})
        return settings


def endpoint_settings(user_config: Any, source: str = "user_config") -> EndpointSettings:
    return validate_config(user_config or {}, EndpointSettings, source)


def load_serving_config(name: str | Path = SERVING_CONFIG) -> dict[str, Any]:
    """Read the Serve config file and check it twice: Ray's own schema (what `serve run` would
    refuse) and Tradewind's parts (app args, each model deployment's user_config)."""
    from pydantic import ValidationError
    from ray.serve.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema

    path, data = read_config_file(name)
    try:
        ServeDeploySchema.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(str(path), error)) from None
    # Ray's schema lets unknown keys through silently; a typo must not pass for a setting
    _known_keys(data, ServeDeploySchema, f"{path}")
    for index, application in enumerate(data.get("applications", [])):
        where = f"{path}: applications[{index}]"
        _known_keys(application, ServeApplicationSchema, f"{path}: applications[{index}]")
        for position, deployment in enumerate(application.get("deployments") or []):
            _known_keys(deployment, DeploymentSchema, f"{where}.deployments[{position}]")
        answering = "deployments"
        if application.get("import_path", "").startswith("serving.app:"):
            answering = validate_config(application.get("args") or {}, AppArgs, f"{where}.args").answering
        for position, deployment in enumerate(application.get("deployments") or []):
            at = f"{where}.deployments[{position}]"
            if deployment.get("name") in MODEL_DEPLOYMENTS.values():
                if answering == "ingress":
                    raise ConfigError(
                        f"{at}: {deployment['name']} is no deployment of its own with answering: ingress "
                        "(its user_config is a section of the Ingress's user_config)"
                    )
                endpoint_settings(deployment.get("user_config"), f"{at}.user_config")
            if deployment.get("name") == INGRESS and deployment.get("user_config") is not None:
                if answering != "ingress":
                    raise ConfigError(f"{at}.user_config: only with answering: ingress")
                ingress_user_config(deployment["user_config"], f"{at}.user_config")
    return data


def ingress_user_config(user_config: Any, source: str) -> dict[str, EndpointSettings]:
    """The Ingress's user_config with answering: ingress: one EndpointSettings per family name."""
    if not isinstance(user_config, dict):
        raise ConfigError(f"{source}: must be a mapping of {', '.join(FAMILY_NAMES)} to endpoint settings")
    unknown = sorted(set(user_config) - set(FAMILY_NAMES))
    if unknown:
        raise ConfigError(f"{source}: unknown key '{unknown[0]}' (known: {', '.join(FAMILY_NAMES)})")
    return {name: endpoint_settings(section, f"{source}.{name}") for name, section in user_config.items()}


def _known_keys(section: Any, schema: Any, where: str) -> None:
    if not isinstance(section, dict):
        return
    unknown = sorted(set(section) - set(schema.model_fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'")


def application(config: dict[str, Any], import_path: str) -> dict[str, Any]:
    """The application entry of `config` built by `import_path` (e.g. `serving.app:build_app`)."""
    for entry in config.get("applications", []):
        if entry.get("import_path") == import_path:
            return entry
    raise ConfigError(f"serving config: no application with import_path {import_path!r}")
