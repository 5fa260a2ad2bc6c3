"""Every Python example in the README runs, and prints what its comments say."""

from __future__ import annotations

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
