"""What `m3shd` tells people and scripts: the exit statuses (issue 17, item 15), and untrusted text
shown as escapes, never obeyed (item 10)."""

from __future__ import annotations

import json
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


HOSTILE = "answer\x1b]0;pwned\x07\x1b[2J\nnext line\ttab\x9b31m \u202eevil\u202c \u2066x\u2069 \u200f"


def test_control_and_bidi_characters_are_shown_not_obeyed():
    shown = cli.for_terminal(HOSTILE)
    assert shown == ("answer\\x1b]0;pwned\\x07\\x1b[2J\nnext line\ttab\\x9b31m \\u202eevil\\u202c \\u2066x\\u2069 "
                     "\\u200f")
    assert cli.for_terminal(shown) == shown  # nothing left to escape


@pytest.mark.parametrize("as_json", [False, True])
def test_human_output_is_neutralised_even_when_piped_and_json_stays_exact(as_json, capsys):
    """Issue 17 item 10: `m3shd task get N | less -R` got the escapes as they were, and U+202E
    went through even on a terminal. capsys is no terminal, as a pipe is not."""
    args = type("Args", (), {"json": as_json})()
    cli.emit(args, {"output": HOSTILE}, lambda document: print(document["output"]))
    printed = capsys.readouterr().out
    if as_json:
        assert json.loads(printed) == {"output": HOSTILE}
    else:
        assert printed == cli.for_terminal(HOSTILE) + "\n"
        assert not any(c in printed for c in "\x1b\x07\x9b\u202e\u202c\u2066\u2069\u200f")


@pytest.mark.parametrize("seconds, shown", [(0, "0 s"), (89, "89 s"), (90, "2 min"), (5399, "90 min"), (5400, "2 h"),
                                            (129599, "36 h"), (129600, "2 d"), (-120, "2 min")])
def test_durations_read_as_a_person_reads_them(seconds, shown):
    assert cli.duration(seconds) == shown
