"""Declares fastcore's compiled extensions; all package metadata lives in pyproject.toml.

Every ``src_cy/<name>.pyx`` becomes ``fastcore._core.<name>``. Cython resolves
``cimport fastcore._core.clock`` through the package layout, so the sources are staged
under ``build/cython/fastcore/_core/`` first: the generated C then names every module
exactly as it is installed, and one core module can cimport another.

``FASTCORE_DEBUG=1 pip install .`` adds annotated HTML, line tracing and the
``FASTCORE_DEBUG`` invariant checks (see ``src_cy/debug.pxd``).
``FASTCORE_SANITIZE=address`` compiles and links the extensions with AddressSanitizer; the
interpreter is not instrumented, so run it with ``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``
(``.ci/run`` does, for the stress suite).
"""

import os
import shutil
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src_cy"
STAGE = HERE / "build" / "cython"
DEBUG = os.environ.get("FASTCORE_DEBUG", "0") == "1"
SANITIZERS = {"": [], "address": ["-fsanitize=address", "-fno-omit-frame-pointer"]}
SANITIZE = os.environ.get("FASTCORE_SANITIZE", "")
if SANITIZE not in SANITIZERS:
    raise SystemExit(f"FASTCORE_SANITIZE must be one of {sorted(SANITIZERS)}, got {SANITIZE!r}")

# The one place where Cython directives are set.
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "embedsignature": True,
    # Python-syntax signatures, and class docstrings that open with "Name(...)\n--\n\n":
    # inspect.signature() then works on every compiled class and method.
    "embedsignature.format": "python",
    "linetrace": DEBUG,
}


def stage_sources() -> Path:
    """Copy src_cy/ to build/cython/fastcore/_core/ so cimports resolve by package name."""
    package = STAGE / "fastcore" / "_core"
    if STAGE.exists():
        shutil.rmtree(STAGE)
    package.mkdir(parents=True)
    (STAGE / "fastcore" / "__init__.pxd").write_text("")
    (package / "__init__.pxd").write_text("")
    for source in SOURCES.iterdir():
        if source.suffix in (".pyx", ".pxd", ".h", ".pxi"):
            shutil.copy2(source, package / source.name)
    return package


def extensions():
    package = stage_sources()
    macros = [
        ("FASTCORE_DEBUG", "1" if DEBUG else "0"),
        ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
    ]
    if DEBUG:
        macros.append(("CYTHON_TRACE_NOGIL", "1"))
    modules = [
        Extension(
            f"fastcore._core.{pyx.stem}",
            [str(package / pyx.name)],
            include_dirs=[str(package), numpy.get_include()],
            define_macros=macros,
            extra_compile_args=(["-O3"] if not DEBUG else ["-O1", "-g"]) + SANITIZERS[SANITIZE],
            extra_link_args=SANITIZERS[SANITIZE],
        )
        for pyx in sorted(SOURCES.glob("*.pyx"))
    ]
    return cythonize(
        modules,
        compiler_directives=DIRECTIVES,
        include_path=[str(STAGE)],
        annotate=DEBUG,
        nthreads=os.cpu_count() or 1,
    )


setup(ext_modules=extensions())
