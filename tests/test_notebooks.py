"""Notebooks run top to bottom on tiny data, as a data scientist would run them."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from configs import PROJECT_ROOT

NOTEBOOKS = PROJECT_ROOT / "notebooks"
# what each notebook must print to show it really did its job, not just ran without an error
EXPECTED_OUTPUT = {
    "platform_tour.ipynb": "MLflow run:",
    "recommendation.ipynb": "registered tradewind-recommender",
    "forecasting.ipynb": "registered tradewind-forecaster",
    "bidding.ipynb": "registered tradewind-bidder",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED_OUTPUT))
def test_notebook_runs(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEWIND_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TRADEWIND_NOTEBOOK_SCALE", "0.05")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
    ]
    assert not [output for output in outputs if output.get("output_type") == "error"]
    texts = [output.get("text", "") for output in outputs]
    assert any(EXPECTED_OUTPUT[name] in text for text in texts), (
        f"{name} never printed {EXPECTED_OUTPUT[name]!r}"
    )
    if name == "platform_tour.ipynb":  # the tour really produced its artefacts
        assert (tmp_path / "data" / "contract" / "events" / "generated.parquet").exists()
        assert (tmp_path / "data" / "feast" / "online_store.db").exists()
