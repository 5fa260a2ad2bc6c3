"""What the installed distribution carries: typing markers, stubs, the native module.

Meant to run against an installed wheel (``.ci/run`` does so from a copy of
``tests/`` outside the source tree), so that a file left out of the wheel
fails here rather than in a user's editor.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import pidfd
import pidfd._native

PACKAGE_DIR = Path(pidfd.__file__).resolve().parent


def test_py_typed_ships_with_the_package() -> None:
    # PEP 561: without the marker, type checkers ignore the package's hints.
    assert (PACKAGE_DIR / "py.typed").is_file()


def test_native_stub_ships_next_to_the_native_module() -> None:
    stub = PACKAGE_DIR / "_native.pyi"
    assert stub.is_file()
    text = stub.read_text(encoding="utf-8")
    for name in pidfd._native.__all__:
        assert name in text, f"{name} missing from {stub}"


def test_native_module_is_the_compiled_extension_inside_the_package() -> None:
    native = Path(pidfd._native.__file__).resolve()
    assert native.parent == PACKAGE_DIR
    # abi3 build: one extension serves every CPython >= 3.11.
    assert native.name.endswith(".so"), native.name


def test_the_pytest_plugin_is_an_entry_point_of_the_distribution() -> None:
    # pytest finds plugins of installed distributions by this group; `-p
    # no:pidfd` names it.
    (entry,) = [
        ep
        for ep in importlib.metadata.distribution("async-pidfd").entry_points
        if ep.group == "pytest11"
    ]
    assert (entry.name, entry.value) == ("pidfd", "pidfd.pytest_plugin")
    assert entry.load().LeakedProcessWarning.__module__ == "pidfd.pytest_plugin"


def test_version_matches_the_distribution_metadata() -> None:
    assert pidfd.__version__ == importlib.metadata.version("async-pidfd")


@pytest.mark.skipif(
    os.environ.get("PIDFD_EXPECT_INSTALLED") != "1",
    reason="only when testing an installed wheel (PIDFD_EXPECT_INSTALLED=1, set by .ci/run)",
)
def test_imported_from_site_packages() -> None:
    # A wheel test that silently imported the source tree instead must fail.
    assert "site-packages" in PACKAGE_DIR.parts, PACKAGE_DIR


@pytest.mark.skipif(
    not sysconfig.get_config_var("Py_GIL_DISABLED"),
    reason="needs a free-threaded CPython build (3.14t: PyO3 0.30 builds for no earlier one)",
)
def test_free_threaded_python_keeps_the_gil_off() -> None:
    # CPython re-enables the GIL (with a RuntimeWarning) when it imports an
    # extension that does not declare gil_used = false; pidfd._native is
    # imported above. A fresh interpreter, with no PYTHON_GIL to force the
    # answer and warnings as errors, imports pidfd and nothing else.
    assert not sys._is_gil_enabled()  # type: ignore[attr-defined]
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    code = "import sys, pidfd, pidfd._native; print(sys._is_gil_enabled())"
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout == "False\n", out
    assert out.stderr == "", out.stderr


def test_dir_shows_only_the_public_api() -> None:
    # dir() is what a REPL's completion and help() show a newcomer: the
    # public names, not the helpers the package imports for itself.
    public = [name for name in dir(pidfd) if not name.startswith("__")]
    assert public == sorted(n for n in pidfd.__all__ if not n.startswith("__"))
    assert "__version__" in dir(pidfd)
    for name in pidfd.__all__:
        assert getattr(pidfd, name) is not None


def test_every_public_name_comes_from_its_own_module() -> None:
    # The layout: wait_any lives in _waitany, the async handle in _async,
    # and __init__ only re-exports them.
    assert pidfd.wait_any.__module__ == "pidfd._waitany"
    assert pidfd.AsyncPidFd.__module__ == "pidfd._async"
    assert pidfd.Popen.__module__ == "pidfd._popen"
    assert pidfd.Process.__module__ == "pidfd._process"


@pytest.mark.parametrize("clash", ["replaced", "removed"])
def test_the_command_names_the_pypi_pidfd_clash_and_its_repair(tmp_path: Path, clash: str) -> None:
    # A copy of the installed package whose __init__.py the other `pidfd`
    # (PyPI 0.1.0) overwrote, or deleted on its uninstall.
    import shutil

    copy = tmp_path / "pidfd"
    shutil.copytree(Path(pidfd.__file__).parent, copy)
    if clash == "replaced":
        (copy / "__init__.py").write_text("from .pidfd import PidFd\n")
        (copy / "pidfd.py").write_text("class PidFd: pass\n")
    else:
        (copy / "__init__.py").unlink()
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    # -S: no site-packages, where this package itself would be found first.
    result = subprocess.run(
        [sys.executable, "-S", "-m", "pidfd", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0
    assert "the unrelated PyPI package 'pidfd' installs over it" in result.stderr
    assert "pip uninstall -y pidfd && pip install --force-reinstall" in result.stderr
