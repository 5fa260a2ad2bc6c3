"""Keep one-word code spans on one line.

Browsers may break a line after any hyphen, inside inline code too, which
splits an option such as ``--kill-after`` into ``--kill-`` and ``after``,
and a reader copying it gets neither. A span without spaces (an option, a
function name, a path) is short, so it is marked to be kept whole; longer
spans with spaces (whole commands) still wrap at their spaces.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes

CSS = "code.literal.pidfd-nowrap, code.literal.pidfd-nowrap span { white-space: nowrap; }\n"


def _mark(app: Any, doctree: nodes.document) -> None:
    for literal in doctree.findall(nodes.literal):
        text = literal.astext()
        if "-" in text and not any(c.isspace() for c in text):
            literal["classes"].append("pidfd-nowrap")


def _write_css(app: Any, exception: Exception | None) -> None:
    if exception is None and app.builder.format == "html":
        from pathlib import Path

        static = Path(app.outdir) / "_static"
        static.mkdir(exist_ok=True)
        (static / "pidfd-nowrap.css").write_text(CSS, encoding="utf-8")


def setup(app: Any) -> dict[str, Any]:
    app.connect("doctree-read", _mark)
    app.connect("build-finished", _write_css)
    app.add_css_file("pidfd-nowrap.css")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
