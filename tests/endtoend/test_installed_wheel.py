"""Models that load anywhere: the project built as a wheel, installed (not editable) into a fresh
venv, and the demo's registered champions loaded from another directory by their
`models:/tradewind-<name>@champion` URI, each answering its smoke request.

The fresh venv borrows the test venv's third-party packages through a path file (installing torch
and friends again would take minutes and a network); its own site-packages holds only the wheel,
and the test checks that every project module the models load comes from there, not from the
checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from endtoend_world import TrainedWorld

from configs import PROJECT_ROOT
from configs.families import FAMILY_NAMES

pytestmark = pytest.mark.slow

SOURCES = ("pyproject.toml", "README.md", "configs", "features", "models", "tracking", "training", "serving")
OPTIONAL_SOURCES = ("cli", "benchmarks")
STEP_S = 300

LOAD_EVERY_CHAMPION = """
import json, sys
import mlflow
import configs
from configs.settings import load_settings

answers = {}
for registered in sys.argv[1:]:
    pyfunc = mlflow.pyfunc.load_model(f"models:/{registered}@champion")
    served = pyfunc.unwrap_python_model().served
    answer = served.answer(served.smoke_request())
    table = pyfunc.predict(pyfunc.unwrap_python_model().input_example())
    answers[registered] = {
        "class": type(served).__module__ + "." + type(served).__qualname__,
        "module_file": sys.modules[type(served).__module__].__file__,
        "answer_keys": sorted(answer),
        "table_rows": len(table),
    }
print(json.dumps({
    "answers": answers,
    "configs_file": configs.__file__,
    "data_root": str(load_settings().root),
}))
"""


def run(command: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    finished = subprocess.run(command, capture_output=True, text=True, timeout=STEP_S, check=False, **options)
    assert finished.returncode == 0, f"{command[:3]}...: {finished.stdout[-2000:]}{finished.stderr[-3000:]}"
    return finished


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of its sources (a build writes beside them)."""
    source = tmp_path_factory.mktemp("wheel-source")
    for name in SOURCES + OPTIONAL_SOURCES:
        path = PROJECT_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif path.is_file():
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("wheel")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(source),
        ]
    )
    (built,) = out.glob("tradewind-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed into it, not editable."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip()
    )
    # third-party packages from the test venv; a path line, so that venv's own path files (its
    # editable finder of this checkout among them) are not processed
    (site / "borrowed_packages.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)])
    return python


def test_the_installed_wheel_loads_each_champion_from_another_directory(
    trained_world: TrainedWorld, fresh_python: Path, tmp_path: Path
) -> None:
    registered = [family.registered_model for family in FAMILY_NAMES.values()]
    assert set(registered) <= set(trained_world.champions)
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "TRADEWIND_"))
    }
    environment.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{trained_world.settings.root / 'mlflow' / 'mlflow.db'}",
        HOME=str(tmp_path),
        XDG_DATA_HOME=str(tmp_path / "share"),
    )
    finished = run([str(fresh_python), "-c", LOAD_EVERY_CHAMPION, *registered], cwd=tmp_path, env=environment)
    report = json.loads(finished.stdout.strip().splitlines()[-1])
    installed = Path(report["configs_file"]).parent.parent
    assert fresh_python.parent.parent in installed.parents, report["configs_file"]
    for name in registered:
        loaded = report["answers"][name]
        assert Path(loaded["module_file"]).is_relative_to(installed), loaded
        assert loaded["class"].startswith("models."), (
            f"{name} unpickles {loaded['class']}, not a models/ class"
        )
        assert loaded["answer_keys"] and loaded["table_rows"] >= 1, loaded
    # the default data folder lives in the user's data folder, not inside the installed package
    assert not Path(report["data_root"]).is_relative_to(installed)
    assert Path(report["data_root"]).is_relative_to(tmp_path / "share")
