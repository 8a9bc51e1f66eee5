"""`mcm --version` through the installed entry point prints the installed package's version."""

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest


@pytest.mark.parametrize("how", ["entry-point", "python -m mcm"])
def test_version_is_the_installed_package_version(how):
    if how == "entry-point":
        command = [str(Path(sys.executable).parent / "mcm"), "--version"]  # pyproject's script
    else:
        command = [sys.executable, "-m", "mcm", "--version"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"mcm {version('mcm')}\n"
    assert result.stderr == ""
