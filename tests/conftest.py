"""Shared fixtures: an injected manual clock and hypothesis profiles.

Tests import the installed, compiled package (pytest runs with --import-mode=importlib from
the repository root, so the source tree never shadows it). HYPOTHESIS_PROFILE=ci (set by
.ci/run) keeps the property tests inside CI's time budget; `thorough` runs more examples.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

import fastcore

settings.register_profile(
    "ci", max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "dev", max_examples=100, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "thorough", max_examples=2000, stateful_step_count=100, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def clock():
    """A ManualClock at 1000 s: far enough from 0 that a fresh bucket's TAT (0) is in the past."""
    return fastcore.ManualClock(start=1000.0)
