"""The suite's own machinery: the ``kernel`` marker skips below its kernel only."""

from __future__ import annotations

import types

import pytest

import conftest
from _helpers import kernel


def _item(*marks: pytest.MarkDecorator) -> object:
    """Just enough of a test item for the hook: its markers by name."""
    return types.SimpleNamespace(
        iter_markers=lambda name: [m.mark for m in marks if m.name == name],
    )


def test_kernel_marker_skips_below_and_names_what_needs_it() -> None:
    reason = conftest.kernel_skip_reason(_item(pytest.mark.kernel(99, 0, reason="PIDFD_X")))
    assert reason is not None and reason.startswith("PIDFD_X needs Linux >= 99.0 (running "), reason


def test_kernel_marker_runs_on_the_running_kernel_and_above() -> None:
    major, minor = kernel()
    assert conftest.kernel_skip_reason(_item(pytest.mark.kernel(major, minor))) is None
    assert conftest.kernel_skip_reason(_item(pytest.mark.kernel(major - 1, 99))) is None


def test_kernel_marker_the_highest_of_several_decides() -> None:
    marks = (pytest.mark.kernel(3, 0), pytest.mark.kernel(99, 0))
    reason = conftest.kernel_skip_reason(_item(*marks))
    assert reason is not None and reason.startswith("needs Linux >= 99.0"), reason
