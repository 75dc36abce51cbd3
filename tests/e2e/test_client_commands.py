"""The client commands against a live Commander (no N0D3 unless a test starts one): what they
print and how they exit (issue 17, the newcomer's items)."""

from __future__ import annotations

import pytest

from harness import m3shd


def cli(cmd, *args, token: str | None = None, **kwargs):
    return m3shd(*args, "--url", cmd.url, "--token", token or cmd.admin_token, env=cmd.env, check=False, **kwargs)


def test_each_kind_of_refusal_has_its_own_exit_status(cmd):
    """Every refusal exited 1, which the README keeps for a task that failed."""
    phone = cmd.token("phone", role="mobile")
    queued = cmd.api.submit_task("nobody runs me")["id"]  # no N0D3 here: it stays queued
    cases = [
        (["task", "get", str(queued)], "m3a_not-a-token", 5, "(401)"),
        (["nodes", "disable", "1"], phone, 5, "(403)"),
        (["task", "get", "999999"], None, 6, "(404)"),
        (["task", "approve", str(queued)], None, 7, "(409)"),
        (["task", "submit", "x", "--priority", "1000", "--no-wait"], None, 2, "(400)"),
    ]
    for argv, token, status, said in cases:
        done = cli(cmd, *argv, token=token)
        assert (done.returncode, said in done.stderr) == (status, True), f"{argv}: {done.returncode} {done.stderr}"
