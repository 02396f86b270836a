"""The one MLflow pyfunc adapter: any `models.served.ServedModel` as an MLflow pyfunc.

Training registers `ServedPyfunc(served_model)`; serving loads it by alias and answers through
`.served` (the plain model), so a replica imports the family's served model and this adapter,
never a training module. `predict` is MLflow's generic path (batch scoring, `mlflow models
serve`, the registry's smoke test): one request per input row, answered by the same `answer`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from models.served import Answer, ServedModel, TabularForm, contract_gaps


class ServedPyfunc(PythonModel):
    """Wraps one served model; written once for every family."""

    def __init__(self, served: ServedModel) -> None:
        gaps = contract_gaps(served)
        if gaps:
            raise TypeError(f"{type(served).__name__} lacks {', '.join(gaps)} of the served-model contract")
        self.served = served

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        tabular = isinstance(self.served, TabularForm)
        rows: list[dict[str, Any]] = []
        for index, raw in enumerate(model_input.to_dict(orient="records")):
            row = {key: plain(value) for key, value in raw.items()}
            if tabular:
                request, online = self.served.request_from_row(row)
                rows += self.served.rows_from_answer(self.served.answer(request, online), index)
            else:
                rows.append(flat_row(self.served.answer(row)))
        return pd.DataFrame(rows)

    def input_example(self) -> pd.DataFrame:
        """The smoke request as `predict`'s input: what the registry stores as the input example."""
        if isinstance(self.served, TabularForm):
            return pd.DataFrame([self.served.example_row()])
        return pd.DataFrame([self.served.smoke_request()])


def plain(value: Any) -> Any:
    """A DataFrame cell as plain Python: arrays as lists, numpy scalars as numbers, NaN as None."""
    if isinstance(value, np.ndarray):
        return [plain(item) for item in value.tolist()]
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def flat_row(answer: Answer) -> dict[str, Any]:
    """An answer as one output row: nested lists and objects as JSON text."""
    return {
        key: json.dumps(value) if isinstance(value, list | dict) else value for key, value in answer.items()
    }
