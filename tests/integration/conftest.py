"""Wall times of the integration runs, printed in pytest's terminal summary."""

from __future__ import annotations

import pytest

_TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def timings() -> dict[str, float]:
    """Name -> seconds; every entry is shown at the end of the pytest session."""
    return _TIMINGS


def pytest_terminal_summary(terminalreporter):
    if _TIMINGS:
        terminalreporter.section("integration run times")
        for name, seconds in _TIMINGS.items():
            terminalreporter.write_line(f"{name}: {seconds / 60:.1f} min ({seconds:.0f} s)")
