"""The wheel works outside the checkout: built from a copy of the sources with the project's own build
backend, installed into a fresh virtual environment, its `nextclick` command answers.

The fresh environment reuses the installed dependencies (torch above all: a CPU build of several hundred
megabytes, and no network here) through a .pth file naming this interpreter's site-packages; the
wheel's own copy of nextclick comes first on its path, so the checkout's editable install is not what
runs. `pip wheel --no-build-isolation` runs the same PEP 517 backend as `python -m build` (setuptools,
pyproject.toml) without the `build` package or an index."""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*command, cwd: Path | None = None) -> str:
    done = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(map(str, command))}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.services
def test_the_wheel_installs_into_a_fresh_environment_with_a_working_nextclick_command(tmp_path):
    source = tmp_path / "source"  # a copy: building in the checkout would write build/ and egg-info there
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
        "-w", tmp_path / "dist", source)
    wheel, = (tmp_path / "dist").glob("nextclick-*.whl")

    fresh = tmp_path / "fresh"
    run(sys.executable, "-m", "venv", "--without-pip", fresh)
    python = fresh / "bin" / "python"
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (purelib / "reuse_installed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-index", wheel)

    package = Path(run(python, "-c", "import nextclick; print(nextclick.__file__)").strip()).parent
    assert package.is_relative_to(purelib), f"imported nextclick from {package}, not the wheel"
    assert (package / "py.typed").is_file() and (package / "serve" / "page.html").is_file()
    version = run(python, "-c", "import nextclick; print(nextclick.__version__)").strip()
    assert wheel.name.startswith(f"nextclick-{version}-")
    assert run(fresh / "bin" / "nextclick", "--version").strip() == f"nextclick {version}"
    models = run(fresh / "bin" / "nextclick", "models")
    assert "narm" in models and "dsan" in models
