"""Every Python example in the README runs, and prints what its comments say."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if README.exists() else []


def expected_output(block: str) -> list[str]:
    """The `print(...)  # value` comments, in order."""
    return [
        m.group(1).strip()
        for line in block.splitlines()
        if line.lstrip().startswith("print(") and (m := re.search(r"#\s*(.+)$", line))
    ]


@pytest.mark.skipif(not BLOCKS, reason="README.md not next to the tests (installed-wheel run)")
@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example(block: str, tmp_path: Path) -> None:
    # A block that starts with "# Linux >= X.Y" needs that kernel.
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
