"""Model endpoints answered inside the ingress replica (`answering: ingress`).

Each model deployment behind the ingress costs a second hop per request (ingress replica -> model
replica over Ray, and back): about as much as Ray Serve's whole floor on a small machine. With
`answering: ingress` the ingress builds the three endpoints in its own replica and calls them
through `LocalHandle`, which looks like a `DeploymentHandle` (`await handle.<method>.remote(...)`),
so the ingress code is one for both shapes. The endpoints keep everything else: registry polling,
batching, admission, the bidder's pacing store (shared by every replica through its store).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from configs.settings import Settings

ANSWERING = ("ingress", "deployments")


@dataclass(frozen=True)
class InProcessEndpoint:
    """What the ingress needs to build a model endpoint in its own replica: the deployment's class
    (`serving.endpoints.Recommender`...) and its constructor's arguments."""

    deployment: Any  # a ray.serve Deployment; its class is `func_or_class`
    settings: Settings
    registered_model: str | None = None

    def build(self) -> Any:
        return self.deployment.func_or_class(self.settings, self.registered_model)


class _LocalMethod:
    def __init__(self, method: Callable[..., Any]) -> None:
        self._method = method

    def remote(self, *args: Any) -> Awaitable[Any]:
        if inspect.iscoroutinefunction(self._method):
            return self._method(*args)
        return asyncio.to_thread(self._method, *args)  # a blocking method keeps the loop free


class LocalHandle:
    """An endpoint object in this process, called the way a DeploymentHandle is."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def __getattr__(self, name: str) -> _LocalMethod:
        return _LocalMethod(getattr(self.target, name))
