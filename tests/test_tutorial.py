"""docs/tutorial.md runs as written: its python blocks, in order, as one script, then its bash blocks, in a
fresh folder that holds only examples/ (so it writes nothing into the checkout), with this interpreter's
`nextclick` on the PATH. A tutorial that no longer runs fails here rather than in a reader's hands."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
EXAMPLE_LOG = ROOT / "examples" / "clicks.csv"


def code_blocks(markdown: str, language: str) -> list[str]:
    """The bodies of the fenced blocks of `language`, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL)


def test_code_blocks_are_found_in_the_tutorial():
    markdown = TUTORIAL.read_text()
    assert len(code_blocks(markdown, "python")) >= 6 and len(code_blocks(markdown, "bash")) >= 1
    assert markdown.count("```") % 2 == 0


def test_the_example_log_is_small_and_what_its_script_writes():
    spec = importlib.util.spec_from_file_location("make_clicks", ROOT / "examples" / "make_clicks.py")
    make_clicks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_clicks)
    assert EXAMPLE_LOG.stat().st_size < 400 * 1024
    assert EXAMPLE_LOG.read_text() == "\n".join(make_clicks.rows(make_clicks.sessions_in_time_order(make_clicks.CONFIG))) + "\n"


@pytest.mark.services  # ~10 s end to end (a subprocess running every block): in .ci/run's `make test-services`
def test_the_tutorial_runs_end_to_end(tmp_path):
    markdown = TUTORIAL.read_text()
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    script = tmp_path / "tutorial.py"
    script.write_text("\n".join(code_blocks(markdown, "python")))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONHASHSEED": "0"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SR-IEM - STAN on MRR@20" in done.stdout and "after 3 clicks" in done.stdout
    assert (tmp_path / "by_length.png").stat().st_size > 10_000
    for block in code_blocks(markdown, "bash"):
        shell = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=300)
        assert shell.returncode == 0, f"{block}\n{shell.stderr[-3000:]}"
        assert shell.stdout.strip(), block
