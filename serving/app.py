"""The Tradewind Ray Serve application: a FastAPI ingress and the three model endpoints.

    HTTP -> Ingress (FastAPI: validation, deadline, metrics, /docs)
              -> Recommender   models:/tradewind-recommender@champion
              -> Forecaster    models:/tradewind-forecaster@champion
              -> Bidder        models:/tradewind-bidder@champion, with the pacing state

`answering: ingress` (the default) builds the three endpoints inside the ingress replica (one hop
per request); `answering: deployments` makes each a deployment of its own behind the ingress's
handles, scaled apart (configs/serving-split.yaml).

`configs/serving.yaml` is a plain Ray Serve config: `serve run configs/serving.yaml` builds this
application through `build_app(args)` and a bare `Echo` application (`build_echo`), Ray Serve's
own latency floor for the benchmark. Replicas, autoscaling and batching are set there; each
model deployment's `user_config` is `serving.settings.EndpointSettings`.

The ingress lives in `serving/ingress.py`, the model deployments in `serving/endpoints.py`; this
module binds them into the applications (and holds the bare echo, an application of its own).
"""

from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from ray import serve

from configs import ConfigError, InputError, validate_config
from configs.settings import Settings
from serving.auth import ApiKey, AuthSettings, KeyRing
from serving.endpoints import Bidder, Forecaster, Recommender
from serving.in_process import InProcessEndpoint
from serving.ingress import Ingress
from serving.settings import AppArgs

__all__ = ["Echo", "build_app", "build_echo", "tradewind_app"]  # what other modules take from here


# ---------------------------------------------------------------------------------------------
# the bare echo: Ray Serve's own floor (no FastAPI, no second hop)


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Echo:
    async def __call__(self, request: Request) -> Response:
        return Response(await request.body(), media_type="application/json")


# ---------------------------------------------------------------------------------------------
# application builders (import paths of configs/serving.yaml)


def tradewind_app(
    settings: Settings,
    deployment_options: dict[str, dict[str, Any]] | None = None,
    registered_models: dict[str, str] | None = None,
    answering: str = "ingress",
    auth: AuthSettings | None = None,
    extra_keys: Sequence[ApiKey] = (),
) -> serve.Application:
    """The application for `settings`; `deployment_options` are `.options()` per deployment name
    (what the `deployments:` list of the Serve config holds; with answering: ingress, options of
    the model deployments are not used: their user_config is a section of the Ingress's). The
    ingress accepts the API keys of `auth`'s keys file, TRADEWIND_API_KEYS and `extra_keys`."""
    # read here, where the app is built: a malformed keys file fails the deploy with one line
    keys = KeyRing.load(auth or AuthSettings(), settings.root, extra_keys)
    options = deployment_options or {}
    names = registered_models or {}

    def bound(deployment: Any) -> Any:
        if answering == "ingress":
            return InProcessEndpoint(deployment, settings, names.get(deployment.name))
        return deployment.options(**options.get(deployment.name, {})).bind(
            settings, names.get(deployment.name)
        )

    return Ingress.options(**options.get("Ingress", {})).bind(
        bound(Recommender), bound(Forecaster), bound(Bidder), keys=keys
    )


def build_app(args: dict[str, Any]) -> serve.Application:
    """`import_path: serving.app:build_app` in configs/serving.yaml (Ray Serve's app builder)."""
    try:
        app_args = validate_config(args, AppArgs, "serving application args")
        settings = app_args.settings()
        return tradewind_app(settings, answering=app_args.answering, auth=app_args.auth)
    except (ConfigError, InputError) as error:
        raise ValueError(str(error)) from None


def build_echo(args: dict[str, Any]) -> serve.Application:
    """`import_path: serving.app:build_echo`: the bare echo application."""
    return Echo.bind()
