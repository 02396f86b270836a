"""Notebooks run top to bottom on tiny data, as a data scientist would run them.

The notebooks of the session's selected tests run at once, each in a kernel (a process) of its own
with its own data folder and environment (one module-scoped fixture): on two cores, one kernel's
start-up and waits overlap another's work. Each test then asserts on its own notebook's result."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode

from configs import PROJECT_ROOT

NOTEBOOKS = PROJECT_ROOT / "notebooks"
# what each notebook must print to show it really did its job, not just ran without an error
EXPECTED_OUTPUT = {
    "platform_tour.ipynb": "MLflow run:",
    "recommendation.ipynb": "registered tradewind-recommender",
    "forecasting.ipynb": "registered tradewind-forecaster",
    "bidding.ipynb": "registered tradewind-bidder",
}
TEST_NAME = "test_notebook_runs"


@dataclass
class Executed:
    folder: Path  # the kernel's working folder; its data folder is folder / "data"
    notebook: NotebookNode
    error: BaseException | None  # what stopped the execution (a failing cell, a timeout), if anything


def _selected(session: pytest.Session) -> list[str]:
    """The notebooks whose test this session runs (all of them, one, or none)."""
    return [
        item.callspec.params["name"]
        for item in session.items
        if getattr(item, "originalname", None) == TEST_NAME and hasattr(item, "callspec")
    ]


async def _execute(name: str, folder: Path) -> Executed:
    # the environment is the kernel's own (not os.environ): the kernels run side by side
    env = {**os.environ, "TRADEWIND_DATA_DIR": str(folder / "data"), "TRADEWIND_NOTEBOOK_SCALE": "0.05"}
    env.pop("MLFLOW_TRACKING_URI", None)
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    try:
        await client.async_execute(env=env)
    except Exception as error:  # reported by the notebook's own test, not by its neighbours'
        return Executed(folder, notebook, error)
    return Executed(folder, notebook, None)


@pytest.fixture(scope="module")
def executed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Executed]:
    names = _selected(request.session)
    folders = {name: tmp_path_factory.mktemp(name.removesuffix(".ipynb")) for name in names}

    async def all_at_once() -> list[Executed]:
        return await asyncio.gather(*(_execute(name, folders[name]) for name in names))

    return dict(zip(names, asyncio.run(all_at_once()), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED_OUTPUT))
def test_notebook_runs(name: str, executed: dict[str, Executed]) -> None:
    result = executed[name]
    if result.error is not None:
        raise result.error
    outputs = [
        output
        for cell in result.notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    ]
    assert not [output for output in outputs if output.get("output_type") == "error"]
    texts = [output.get("text", "") for output in outputs]
    assert any(EXPECTED_OUTPUT[name] in text for text in texts), (
        f"{name} never printed {EXPECTED_OUTPUT[name]!r}"
    )
    if name == "platform_tour.ipynb":  # the tour really produced its artefacts
        assert (result.folder / "data" / "contract" / "events" / "generated.parquet").exists()
        assert (result.folder / "data" / "feast" / "online_store.db").exists()
