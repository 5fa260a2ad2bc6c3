"""Run anyio's own ``tests/test_subprocesses.py`` against ``pidfd.open_process``.

The external bar for ``pidfd.Process``: anyio's subprocess tests, from the
sdist of the anyio version installed here, with each backend's
``open_process`` hook (the one ``anyio.open_process`` and
``anyio.run_process`` call) pointed at ours, on asyncio (plus uvloop where it
is installed) and trio. anyio's own pytest configuration and conftest are
used as shipped.

Usage (from any directory; needs network access to PyPI for the sdist
unless ``--sdist`` names a downloaded ``anyio-X.Y.Z.tar.gz``)::

    pip install pytest-mock trustme blockbuster uvloop   # anyio's test deps
    python tests/external/anyio_subprocesses.py [--sdist FILE] [pytest args...]

Exit status: pytest's. Tests that cannot apply to ``pidfd.Process`` are
deselected and listed in ``NOT_APPLICABLE`` below with the reason.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path

# test id -> why it cannot apply to pidfd.Process. Empty: every test applies.
NOT_APPLICABLE: dict[str, str] = {}

# Imported by pytest (-p) before anyio's conftest, in the pytest process.
PLUGIN = textwrap.dedent(
    '''
    """Point anyio's backends' open_process at pidfd.open_process."""

    from anyio._backends._asyncio import AsyncIOBackend
    from anyio._backends._trio import TrioBackend

    import pidfd


    async def _open_process(cls, command, *, stdin, stdout, stderr, **kwargs):
        return await pidfd.open_process(
            command, stdin=stdin, stdout=stdout, stderr=stderr, **kwargs
        )


    AsyncIOBackend.open_process = classmethod(_open_process)
    TrioBackend.open_process = classmethod(_open_process)

    # No blockbuster exemption: anyio's conftest watches every test with
    # blockbuster, and our spawn never blocks the loop (the exec status is
    # awaited; the stock error-pipe read meets EOF on a non-blocking fd).


    def pytest_report_header(config):
        return f"anyio backends' open_process -> pidfd.open_process ({pidfd.__file__})"


    def pytest_runtest_call(item):
        # Fail loudly if the hook was undone: the run would test anyio instead.
        assert AsyncIOBackend.open_process.__func__ is _open_process
        assert TrioBackend.open_process.__func__ is _open_process
    '''
)


def fetch_sdist(version: str, dest: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-binary",
            ":all:",
            "--no-deps",
            f"anyio=={version}",
            "-d",
            str(dest),
        ],
        check=True,
    )
    (sdist,) = dest.glob(f"anyio-{version}.tar.gz")
    return sdist


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdist", type=Path, help="anyio sdist to use instead of downloading")
    args, pytest_args = parser.parse_known_args()

    version = importlib.metadata.version("anyio")
    with tempfile.TemporaryDirectory(prefix="pidfd-anyio-") as tmp:
        work = Path(tmp)
        sdist = args.sdist or fetch_sdist(version, work)
        if f"anyio-{version}" not in sdist.name:
            print(f"{sdist} is not the sdist of the installed anyio {version}", file=sys.stderr)
            return 2
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter="data")
        root = work / f"anyio-{version}"
        (work / "pidfd_anyio_hook.py").write_text(PLUGIN)

        print(f"anyio {version}: tests/test_subprocesses.py against pidfd.open_process")
        for test, reason in NOT_APPLICABLE.items():
            print(f"  not applicable: {test}: {reason}")
        deselect = [f"--deselect=tests/test_subprocesses.py::{t}" for t in NOT_APPLICABLE]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(work), env.get("PYTHONPATH")]))
        # Run in the sdist, so anyio's pyproject (addopts, markers, warnings
        # as errors, timeout) and conftest apply as shipped. The installed
        # anyio is the one under test, not the sdist's src/ (same version).
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "pidfd_anyio_hook",
                "-p",
                "no:cacheprovider",
                "tests/test_subprocesses.py",
                *deselect,
                *pytest_args,
            ],
            cwd=root,
            env=env,
            check=False,
        ).returncode


if __name__ == "__main__":
    raise SystemExit(main())
