"""The documentation site's own Sphinx extension (docs/_ext)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EXT = Path(__file__).resolve().parent.parent / "docs" / "_ext"


def test_one_word_code_spans_are_kept_on_one_line() -> None:
    # A browser breaks lines after hyphens, inside inline code too, which
    # splits --kill-after across lines; one-word spans are marked nowrap.
    if not EXT.is_dir():
        pytest.skip("docs/ not next to the tests (installed-wheel run)")
    nodes = pytest.importorskip("docutils.nodes")
    utils = pytest.importorskip("docutils.utils")
    frontend = pytest.importorskip("docutils.frontend")
    sys.path.insert(0, str(EXT))
    try:
        import pidfd_nowrap
    finally:
        sys.path.remove(str(EXT))
    settings = frontend.get_default_settings()
    doc = utils.new_document("<test>", settings)
    spans = [nodes.literal(text=t) for t in ("--kill-after", "pidfd run --json", "wait")]
    doc += nodes.paragraph("", "", *spans)
    pidfd_nowrap._mark(None, doc)
    assert [("pidfd-nowrap" in s["classes"]) for s in spans] == [True, False, False]
    assert "white-space: nowrap" in pidfd_nowrap.CSS
