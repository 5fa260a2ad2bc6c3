"""Every Python example in the README and on the documentation site runs, and
prints what its comments say.

A ```` ```python ```` block runs on its own under ``python -c`` (so a block that
needs asyncio or trio starts its own event loop). A line ``print(x)  # value``
asserts that ``value`` is printed on a line of its own; ``# e.g. ...`` marks
output that varies and is not checked. A block whose first line is
``# Linux >= X.Y`` is skipped on an older kernel.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
PAGES = [p for p in PAGES if p.exists() and "_build" not in p.parts]


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)


BLOCKS = [
    pytest.param(block, id=f"{page.relative_to(ROOT)}:block{i}")
    for page in PAGES
    for i, block in enumerate(python_blocks(page))
]


def expected_output(block: str) -> list[str]:
    """The `print(...)  # value` comments, in order."""
    return [
        m.group(1).strip()
        for line in block.splitlines()
        if line.lstrip().startswith("print(") and (m := re.search(r"#\s*(.+)$", line))
    ]


def test_the_pages_are_found() -> None:
    if not (ROOT / "README.md").exists():
        pytest.skip("README.md not next to the tests (installed-wheel run)")
    assert any(p.parent.name == "docs" for p in PAGES), "no docs/*.md found"
    assert len(BLOCKS) > 10, BLOCKS


@pytest.mark.skipif(not BLOCKS, reason="README.md not next to the tests (installed-wheel run)")
@pytest.mark.parametrize("block", BLOCKS)
def test_example(block: str, tmp_path: Path) -> None:
    needs = re.match(r"# Linux >= (\d+)\.(\d+)", block)
    running = tuple(int(n) for n in re.findall(r"\d+", os.uname().release)[:2])
    if needs and running < (int(needs[1]), int(needs[2])):
        pytest.skip(f"needs Linux >= {needs[1]}.{needs[2]}")
    result = subprocess.run(
        [sys.executable, "-c", block],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()
    for want in expected_output(block):
        if want.startswith(("resource usage", "e.g.")):
            continue
        assert want in printed, f"expected {want!r} in output {printed!r}"


def _readme() -> str:
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md not next to the tests (installed-wheel run)")
    return readme.read_text(encoding="utf-8")


def test_readme_links_point_at_files_in_the_repository() -> None:
    # The README links into docs/ by relative path (the site is not hosted
    # yet); a page renamed or moved must not leave a dead link behind.
    text = _readme()
    targets = re.findall(r"\]\(([^)#]+?)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert local, "the README links into nothing"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, missing


def test_readme_test_command_is_the_one_ci_runs() -> None:
    # .ci/run's last step runs "the README's test command, verbatim".
    command = "pip install '.[test]' && python -m pytest && cargo test"
    assert command in _readme()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert f"    {command}\n" in ci


def test_readme_quotes_no_max_rss_figure_for_a_tiny_command() -> None:
    # The floor is the pidfd process's own size, which varies by machine and
    # Python build (about 22-25 MB here): a fixed figure goes stale.
    for page in [ROOT / "README.md", ROOT / "docs" / "cli.md"]:
        if not page.exists():
            continue
        for paragraph in page.read_text(encoding="utf-8").split("\n\n"):
            if "resident set size" in paragraph.lower():
                assert not re.search(r"\d+\s*MB", paragraph), paragraph
