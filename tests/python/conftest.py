"""Fixtures shared by the Python tests."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """The training data set of tools/prepare_data.py (docs/DATA.md), built once per run;
    skips when the Debian text packages are missing."""
    if subprocess.run(["which", "bible"], capture_output=True).returncode != 0:
        pytest.skip("bible-kjv is not installed (tools/install-deps.sh installs it)")
    out = tmp_path_factory.mktemp("data")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "prepare_data.py"), "--out",
                    str(out)], check=True, capture_output=True)
    return out
