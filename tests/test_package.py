"""The package as a user meets it: the source tree refuses to stand in for the build."""

import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def test_importing_the_source_tree_names_the_cause():
    run = subprocess.run(
        [sys.executable, "-c", "import fastcore"], cwd=REPOSITORY,
        capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "imported from its source tree" in run.stderr
    assert "pip install ." in run.stderr


def test_the_installed_package_is_not_the_source_tree():
    import fastcore
    assert Path(fastcore.__file__).resolve().parent != REPOSITORY / "fastcore"
