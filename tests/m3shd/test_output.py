"""What `m3shd` tells people and scripts: the exit statuses (issue 17, item 15)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from m3shd import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_and_help_list_the_exit_statuses_the_code_returns():
    section = README.read_text().split("## The command line", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", section, re.MULTILINE)
    assert [(int(code), meaning.replace("\\|", "|")) for code, meaning in rows] == list(cli.EXIT_STATUSES)
    epilog = cli.build_parser().epilog
    for code, meaning in cli.EXIT_STATUSES:
        assert f"  {code:<4} {meaning}\n" in epilog + "\n"
    assert len({code for code, _ in cli.EXIT_STATUSES}) == len(cli.EXIT_STATUSES)


@pytest.mark.parametrize("http_status, status", [
    (400, cli.EXIT_USAGE), (413, cli.EXIT_USAGE), (401, cli.EXIT_REFUSED), (403, cli.EXIT_REFUSED),
    (404, cli.EXIT_NOT_FOUND), (409, cli.EXIT_CONFLICT), (429, cli.EXIT_UNREACHABLE), (500, cli.EXIT_UNREACHABLE),
    (503, cli.EXIT_UNREACHABLE),
])
def test_a_refusal_never_exits_as_a_failed_task(http_status, status):
    assert cli.refusal_status(http_status) == status != cli.EXIT_FAILED
