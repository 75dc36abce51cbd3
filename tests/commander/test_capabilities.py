"""The rules that decide which capability labels a node may give itself (commander/capabilities.py)."""

from __future__ import annotations

import pytest

from commander.capabilities import Standing, asked_for, is_fact, reported

FACTS = ("os=", "arch=", "runner=")


def test_a_report_of_the_approved_labels_changes_nothing():
    assert reported(["gpu", "os=linux"], ["os=linux", "gpu"], FACTS) == Standing(["gpu", "os=linux"], None)


def test_a_new_label_waits_and_the_approved_ones_stay():
    standing = reported(["gpu"], ["gpu", "vault"], FACTS)
    assert standing == Standing(["gpu"], ["gpu", "vault"])
    assert asked_for(standing) == ["vault"]


def test_facts_of_the_machine_change_freely_beside_a_waiting_label():
    standing = reported(["os=linux", "runner=claude-cli"], ["os=darwin", "arch=arm64", "vault"], FACTS)
    assert standing == Standing(["arch=arm64", "os=darwin"], ["arch=arm64", "os=darwin", "vault"])
    assert asked_for(standing) == ["vault"]


def test_a_label_the_node_stops_reporting_is_dropped_and_needs_approval_to_come_back():
    dropped = reported(["gpu", "vault"], ["gpu"], FACTS)
    assert dropped == Standing(["gpu"], None)
    assert reported(dropped.approved, ["gpu", "vault"], FACTS) == Standing(["gpu"], ["gpu", "vault"])


def test_a_node_that_stops_asking_has_nothing_waiting():
    assert reported(["gpu"], ["gpu"], FACTS).requested is None


def test_approved_labels_are_always_among_those_reported():
    for approved, labels in ((["a", "b"], ["b", "c"]), ([], ["os=x", "z"]), (["a"], []), (["os=x"], ["os=y"])):
        standing = reported(approved, labels, FACTS)
        assert set(standing.approved) <= set(labels)
        assert standing.requested in (None, sorted(set(labels)))


def test_a_label_that_only_looks_like_a_fact_is_a_grant():
    assert not is_fact("vault-os=linux", FACTS) and not is_fact("os", FACTS)
    assert reported([], ["osx", "os=linux"], FACTS) == Standing(["os=linux"], ["os=linux", "osx"])


@pytest.mark.parametrize("facts", [(), []])
def test_without_facts_every_new_label_waits(facts):
    assert reported([], ["os=linux"], facts) == Standing([], ["os=linux"])
