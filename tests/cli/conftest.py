import json
import os
import subprocess

import pytest

CLI = os.environ.get("CELLROUTE_CLI", "")
EXAMPLES = os.environ.get("CELLROUTE_EXAMPLES", "")


@pytest.fixture(scope="session")
def examples():
    assert EXAMPLES and os.path.isdir(EXAMPLES), "CELLROUTE_EXAMPLES must name examples/"
    return EXAMPLES


@pytest.fixture(scope="session")
def cellroute():
    """Runs the cellroute CLI; returns CompletedProcess with text output."""
    assert CLI and os.access(CLI, os.X_OK), "CELLROUTE_CLI must name the built cellroute binary"

    def run(*args, stdin=None):
        return subprocess.run([CLI, *args], input=stdin, capture_output=True, text=True,
                              timeout=60)

    return run


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]
