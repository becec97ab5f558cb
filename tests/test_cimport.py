"""Other Cython code can cimport fastcore from the installed wheel (the .pxd contract ships)."""

import subprocess
import sys
import textwrap

import pytest

import fastcore

PROBE = """\
from fastcore._core.clock cimport clock_now_ns, clock_resolve
def read_ns(clock):
    return clock_now_ns(clock_resolve(clock))
"""

BUILD = textwrap.dedent("""\
    import fastcore
    from Cython.Build import cythonize
    from setuptools import Extension, setup
    setup(ext_modules=cythonize([Extension("probe", ["probe.pyx"],
                                           include_dirs=[fastcore.get_include()])],
                                compiler_directives={"language_level": 3}, quiet=True),
          script_args=["build_ext", "--inplace", "--quiet"])
""")


def test_outside_pyx_cimports_the_installed_clock(tmp_path):
    pytest.importorskip("Cython")
    (tmp_path / "probe.pyx").write_text(PROBE)
    (tmp_path / "build_probe.py").write_text(BUILD)
    build = subprocess.run([sys.executable, "build_probe.py"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run(
        [sys.executable, "-c",
         "import probe, fastcore; c = fastcore.ManualClock(2.5); print(probe.read_ns(c))"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "2500000000"


def test_get_include_holds_the_pxd_contract():
    from pathlib import Path
    include = Path(fastcore.get_include())
    for name in ("clock.pxd", "gcra.pxd", "keytable.pxd", "decision.pxd", "atomic.h"):
        assert (include / name).is_file(), name
