"""Fixtures for the scheduler tests (the doubles live in scheduling_fakes.py)."""

from __future__ import annotations

import pytest
from scheduling_fakes import ManualClock, RecordingObserver


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def observer() -> RecordingObserver:
    return RecordingObserver()
