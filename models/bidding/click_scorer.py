"""The click model for one bid request, fast: what the served bidder calls on every request.

`ClickScorer` holds a fitted `ClickModel`'s booster behind LightGBM's single-row C API and its
`CalibrationMap`, the same map `ClickModel.predict` applies to a batch: one request scored here and
the same row scored in a batch by training's evaluation give the same probability, to the bit.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.bidding.click_model import CATEGORICAL_FEATURES, CalibrationMap, ClickModel


class SingleRowBooster:
    """A LightGBM booster's probability for one numpy row through LightGBM's C API single-row fast
    path (`LGBM_BoosterPredictForMatSingleRowFast`): ~10 us where `Booster.predict` spends ~100 us
    on checks and conversions. The C handle is made on first use, so the object pickles."""

    def __init__(self, booster: Any, n_features: int) -> None:
        self.booster = booster  # lightgbm.Booster
        self.n_features = n_features
        self._fast: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"booster": self.booster, "n_features": self.n_features}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.booster, self.n_features, self._fast = state["booster"], state["n_features"], None

    def _init(self) -> None:
        from lightgbm.basic import _LIB, _safe_call

        handle = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                self.booster._handle,
                ctypes.c_int(0),  # C_API_PREDICT_NORMAL: the probability
                ctypes.c_int(0),  # from the first iteration
                ctypes.c_int(-1),  # to the best (all)
                ctypes.c_int(1),  # C_API_DTYPE_FLOAT64
                ctypes.c_int32(self.n_features),
                b"num_threads=1",
                ctypes.byref(handle),
            )
        )
        self._out_len = ctypes.c_int64(0)
        self._result = np.zeros(1, dtype=np.float64)
        self._result_pointer = self._result.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._fast = handle
        self._predict = _LIB.LGBM_BoosterPredictForMatSingleRowFast
        self._safe_call = _safe_call
        self._free = _LIB.LGBM_FastConfigFree

    def __call__(self, row: np.ndarray) -> float:
        if self._fast is None:
            self._init()
        row = np.ascontiguousarray(row, dtype=np.float64)
        self._safe_call(
            self._predict(
                self._fast,
                ctypes.c_void_p(row.ctypes.data),
                ctypes.byref(self._out_len),
                self._result_pointer,
            )
        )
        return float(self._result[0])

    def __del__(self) -> None:
        if getattr(self, "_fast", None) is not None:
            self._free(self._fast)
            self._fast = None


@dataclass(frozen=True)
class ClickScorer:
    """A fitted click model for one request: the booster on a numpy row, then the model's own
    calibration map."""

    predict_raw: SingleRowBooster
    numeric: tuple[str, ...]  # numeric columns in booster order (extra context included)
    codes: Mapping[str, Mapping[str, int]]  # categorical column (booster order) -> category -> code
    calibration: CalibrationMap

    @classmethod
    def of(cls, model: ClickModel) -> ClickScorer:
        numeric = tuple(name for name in model.feature_names if name not in CATEGORICAL_FEATURES)
        codes = {
            column: {value: index for index, value in enumerate(values)}
            for column, values in model.categories.items()
        }
        booster = SingleRowBooster(model.booster, len(model.feature_names))
        return cls(booster, numeric, codes, model.calibration)

    def row(self, numeric: Mapping[str, float], categorical: Mapping[str, str | None]) -> np.ndarray:
        """The booster's input row: numeric values (NaN when absent), then category codes (NaN when
        unseen in training, as `ClickModel` turns unseen categories into missing values)."""
        values = [numeric.get(name, math.nan) for name in self.numeric]
        for column, codes in self.codes.items():
            code = codes.get(categorical.get(column) or "")
            values.append(math.nan if code is None else float(code))
        return np.array(values, dtype=np.float64)

    def probability(self, row: np.ndarray) -> float:
        return float(self.calibration.apply(np.array([self.predict_raw(row)]))[0])
