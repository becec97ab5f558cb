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


def test_every_public_class_and_method_has_a_signature():
    """inspect.signature() works on the compiled classes as on Python ones (IDEs, help(),
    documentation tools and argument-checking wrappers rely on it)."""
    import inspect

    import fastcore
    classes = [getattr(fastcore, name) for name in fastcore.__all__
               if isinstance(getattr(fastcore, name), type)
               and not issubclass(getattr(fastcore, name), BaseException)]
    assert fastcore.KeyedTokenBucket in classes and fastcore.LatencyHistogram in classes
    for cls in classes:
        signature = inspect.signature(cls)
        for name, member in vars(cls).items():
            if callable(member) and not name.startswith("_"):
                inspect.signature(getattr(cls, name))
    bucket = inspect.signature(fastcore.KeyedTokenBucket)
    assert list(bucket.parameters) == ["rate", "burst", "max_keys", "on_full", "clock"]
    assert bucket.parameters["max_keys"].kind is inspect.Parameter.KEYWORD_ONLY
    assert str(inspect.signature(fastcore.KeyedTokenBucket.try_acquire)) == "(self, key, cost=1.0)"
