"""Reliability under failure: real Ray Serve and a real MLflow server on 127.0.0.1, bounded in
requests and time. The application under test is deployed under a name and route prefix of its
own into the session's one Serve instance (`local_serve`, shared with tests/serving) and deleted
afterwards.

The tiny models and the world around them are tests/serving's (`tiny_world`, `served_models`); the
MLflow server helpers are tests/scaleout's (`scaleout_services`), imported the way pytest imports
test modules (tests/ has no __init__.py: a test module's folder goes on sys.path). Nothing is
imported from this conftest: with several test folders in one run, `conftest` names whichever
folder's was loaded last.
"""

from __future__ import annotations

import sys
from pathlib import Path

for _folder in ("serving", "scaleout"):
    _path = str(Path(__file__).resolve().parents[1] / _folder)
    if _path not in sys.path:
        sys.path.insert(0, _path)
