"""Runs one scenario of tests/stress_scenarios.py in a fresh interpreter and judges it.

``run_scenario(name, **params)`` starts ``python -c`` (the interpreter running the tests,
so the installed package; the environment is inherited, so an ``LD_PRELOAD``ed sanitizer
covers the child too), waits, and fails the calling test when the child

* was killed by a signal (a segfault, glibc's abort on a corrupted heap),
* hung: still running after ``HANG_SECONDS``, when faulthandler prints every thread's stack
  and exits with status 1; and if even that fails, the child is killed ``KILL_GRACE``
  seconds later,
* exited non-zero (the scenario's own assertion, with its traceback), or
* printed an AddressSanitizer report, whatever its exit status.

Otherwise it returns the scenario's result (the dict it printed as JSON).
"""

import json
import os
import signal
import subprocess
import sys
import tempfile

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
# A scenario's loops stop after 2 s of wall clock (stress_scenarios.WORK_SECONDS) and its
# checks take well under a second, even in a sanitizer build on a loaded machine: a child
# still running HANG_SECONDS after the scenario started (imports excluded) is hung. The
# parent's own limit adds the imports and a margin, for a child that cannot even report.
HANG_SECONDS = 10.0
KILL_GRACE = 50.0
_CHILD = ("import json, sys; sys.path.insert(0, sys.argv[1]); import stress_scenarios; "
          "stress_scenarios.main(sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4]))")


def _tail(text, limit=6000):
    return text if len(text) <= limit else "...\n" + text[-limit:]


def run_scenario(name, **params):
    """Run ``stress_scenarios.<name>(**params)`` in a child interpreter; its result dict."""
    label = f"{name}({', '.join(f'{k}={v!r}' for k, v in params.items())})"
    argv = [sys.executable, "-c", _CHILD, TESTS, name, json.dumps(params), str(HANG_SECONDS)]
    try:
        # cwd: anywhere but the repository root, whose uncompiled fastcore/ would shadow the
        # installed package
        done = subprocess.run(argv, capture_output=True, text=True, cwd=tempfile.gettempdir(),
                              timeout=HANG_SECONDS + KILL_GRACE)
    except subprocess.TimeoutExpired as hung:
        stderr = hung.stderr.decode(errors="replace") if isinstance(hung.stderr, bytes) else (
            hung.stderr or "")
        pytest.fail(f"{label} hung: killed after {HANG_SECONDS + KILL_GRACE:.0f} s\n"
                    f"{_tail(stderr)}", pytrace=False)
    stderr = done.stderr
    if "AddressSanitizer" in stderr:
        pytest.fail(f"{label}: AddressSanitizer report (exit status {done.returncode})\n"
                    f"{_tail(stderr, 12000)}", pytrace=False)
    if done.returncode < 0:
        signame = signal.Signals(-done.returncode).name
        pytest.fail(f"{label} crashed: killed by {signame} (exit status "
                    f"{128 - done.returncode} in a shell)\n{_tail(stderr)}", pytrace=False)
    if done.returncode == 1 and "Timeout (" in stderr and "most recent call first" in stderr:
        pytest.fail(f"{label} hung: still running after {HANG_SECONDS:.0f} s; every thread's "
                    f"stack:\n{_tail(stderr)}", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"{label} failed (exit status {done.returncode})\n{_tail(stderr)}",
                    pytrace=False)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("STRESS-RESULT "):
            return json.loads(line[len("STRESS-RESULT "):])
    pytest.fail(f"{label} printed no result\nstdout:\n{_tail(done.stdout)}\n"
                f"stderr:\n{_tail(stderr)}", pytrace=False)

