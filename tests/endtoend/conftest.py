"""End to end: the real families trained on a tiny world of this folder's own, served by the real
application (in the session's Serve, and by `tradewind serve` in a process of its own), and
`tradewind demo` run as a user runs it.

Nothing is imported from this conftest (with several test folders in one run, `conftest` names
whichever folder's was loaded last): the world's code is in `endtoend_world`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from endtoend_world import TrainedWorld, train_world


@pytest.fixture(scope="session")
def trained_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainedWorld]:
    """Built and trained once per session; tests read it and serve it, and never retrain or move
    an alias in it (bids reserve budget in its pacing store: each test reads the state it starts
    from)."""
    with pytest.MonkeyPatch.context() as patch:
        # the data folder's own store, as the CLI finds it: no store from the environment
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        yield train_world(tmp_path_factory.mktemp("endtoend") / "data")
