"""schemathesis against the live Commander's OpenAPI document: no 5xx, no response that breaks
its own schema, invalid input refused — as an admin, as a phone (mobile preset), and as nobody."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import ARTIFACTS, Commander

pytestmark = pytest.mark.slow

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance," \
         "negative_data_rejection"


@pytest.fixture(scope="module")
def cmd(tmp_path_factory):
    # Long-polls capped at 1 s, so generated `wait` values cannot stall the run.
    started = Commander(tmp_path_factory.mktemp("schemathesis"), {"M3SHD_COMMANDER_MAX_WAIT": "1"})
    yield started
    started.stop()


@pytest.mark.parametrize("who", ["admin", "mobile", "nobody"])
def test_schemathesis_finds_nothing(cmd, who, tmp_path):
    headers = []
    excluded = ["--exclude-path", "/api/events"]  # an endless stream; covered by its own tests
    if who == "admin":
        headers = ["-H", f"Authorization: Bearer {cmd.admin_token}"]
        # Revoking tokens by generated ids would revoke the one this run uses.
        excluded += ["--exclude-path", "/api/tokens/{token_id}"]
    elif who == "mobile":
        headers = ["-H", f"Authorization: Bearer {cmd.token('fuzz-phone', role='mobile')}"]
    report = ARTIFACTS / f"schemathesis-{who}.xml"
    report.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("st")), "run", f"{cmd.url}/api/openapi.json", "--url", cmd.url,
         *headers, *excluded, "--checks", CHECKS, "--max-examples", os.environ.get("M3SHD_FUZZ_EXAMPLES", "20"),
         "--request-timeout", "10", "--seed", "20261121", "--no-color", "--report", "junit",
         "--report-junit-path", str(report)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path)  # its cache stays out of the checkout
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert "passed" in done.stdout and " 0 passed" not in done.stdout
