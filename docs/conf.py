"""Sphinx configuration for the async-pidfd documentation.

Build (strict, as CI does):

    pip install '.[docs]'
    sphinx-build -W --keep-going -n -b html docs docs/_build/html

The API reference is autodoc against the *installed* package (the native
module has no source to read); ``_ext/pidfd_reference.py`` feeds it the
stub's signatures and docstrings and fails the build on a public name
without a docstring.
"""

from __future__ import annotations

import sys
import tempfile
import zlib
from pathlib import Path

import pidfd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

project = "async-pidfd"
author = "the async-pidfd authors"
copyright = "the async-pidfd authors"
release = pidfd.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "pidfd_reference",
    "pidfd_nowrap",
]

source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_ext", "_inventories", "README.md"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"async-pidfd {release}"
html_static_path: list[str] = []

# Nitpicky (-n): every cross-reference must resolve.
nitpicky = True
default_role = "code"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True}
autodoc_type_aliases: dict[str, str] = {}
# The stub writes `Self`, `HasFileno` and `Literal[False]`, which are typing
# vocabulary rather than things to link to.
nitpick_ignore = [
    # open_process's and run_process's **options (a TypedDict the docstrings
    # spell out: anyio.open_process's keywords plus process_group and
    # die_with_parent).
    ("py:class", "SpawnOptions"),
    ("py:class", "pidfd._process.SpawnOptions"),
    # wait_any's type variable (bound to PidFd | AsyncPidFd; private).
    ("py:class", "pidfd._waitany._Handle"),
    ("py:class", "Self"),
    ("py:class", "HasFileno"),
    ("py:class", "_typeshed.HasFileno"),
    # Private aliases in Popen's and run()'s overloads, restated from
    # typeshed (what a command or a path may be, a return type variable).
    ("py:class", "_Cmd"),
    ("py:class", "StrOrBytesPath"),
    ("py:class", "_T"),
    # Cgroup.add()'s "anything with .pid" protocol (private).
    ("py:class", "pidfd._cgroup._HasPid"),
]
python_use_unqualified_type_names = True

# --- intersphinx, offline ------------------------------------------------------
# CI reaches no documentation site, so the inventories cannot be downloaded at
# build time. The few external names the pages link to are listed in
# _inventories/*.txt (one "name domain:role priority uri dispname" line each,
# the objects.inv format uncompressed); they are packed into objects.inv files
# here. A reference to a name missing from them fails the nitpicky build: add
# a line.
_INVENTORIES = {
    "python": "https://docs.python.org/3",
    "anyio": "https://anyio.readthedocs.io/en/stable",
    "pytest": "https://docs.pytest.org/en/stable",
}
_inv_dir = Path(tempfile.mkdtemp(prefix="pidfd-docs-inv-"))


def _pack_inventory(name: str) -> str:
    lines = [
        line
        for line in (HERE / "_inventories" / f"{name}.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    out = _inv_dir / f"{name}.inv"
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {name}\n"
        "# Version: \n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    out.write_bytes(header.encode() + zlib.compress(("\n".join(lines) + "\n").encode()))
    return str(out)


intersphinx_mapping = {name: (url, _pack_inventory(name)) for name, url in _INVENTORIES.items()}

# --- pages that other branches add --------------------------------------------
# The toctrees list every page in its final place, including pages written on
# other branches that are not merged here yet. Until a page exists, its line
# is dropped from the toctree as the source is read (Sphinx would fail the
# strict build on a missing document). Once every page below is on main,
# delete this list and the _drop_pending_pages hook.
PENDING_PAGES = {
    "kernels",
    "guarantees-interpreters",
    "howto/replace-popen",
    "howto/many-processes",
    "howto/supervise",
}


def _drop_pending_pages(app: object, docname: str, source: list[str]) -> None:
    base = docname.rsplit("/", 1)[0] + "/" if "/" in docname else ""
    kept = []
    for line in source[0].splitlines(keepends=True):
        page = line.strip()
        full = base + page if page else ""
        if full in PENDING_PAGES and not (HERE / f"{full}.md").exists():
            continue
        kept.append(line)
    source[0] = "".join(kept)


def setup(app: object) -> None:
    app.connect("source-read", _drop_pending_pages)  # type: ignore[attr-defined]
