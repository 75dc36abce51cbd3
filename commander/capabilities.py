"""Capabilities: which labels a node may give itself, and which wait for an operator.

Tasks are matched against a node's *approved* capabilities only. A label is a grant: `vault`
on a node lets it take the tasks that require `vault`. So a node cannot grant itself one: a
label it reports that is not approved yet waits for an operator (`m3shd nodes
approve-capabilities`, the API, or the fleet page of the dashboard).

Some labels are facts of the machine that the N0D3 reports about itself (`os=`, `arch=`,
`runner=`); they change with the machine (an upgrade, a runner installed) and grant nothing an
operator could judge better, so the prefixes in the `capability_facts` setting change freely.

The rules, for each report (`reported`):
- a fact label is taken as reported, added or dropped;
- any other label stays approved while the node keeps reporting it and goes when it stops
  (giving up a label grants nothing), so the approved labels are always among those reported;
- a label outside the facts and not approved is not taken: the node's whole report is kept as
  its request, until an operator approves it (the approved labels become that report) or the
  node stops asking.

A first registration's labels are approved as given: the join token, or the operator's approval
of a tokenless join, is the operator's consent to the machine as it described itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple


class Standing(NamedTuple):
    """A node's labels: those approved, and its report while that waits for approval (else None)."""
    approved: list[str]
    requested: list[str] | None


def is_fact(label: str, facts: Sequence[str]) -> bool:
    """Is `label` a fact of the machine (it starts with one of the `facts` prefixes)?"""
    return label.startswith(tuple(facts))


def reported(approved: Iterable[str], labels: Iterable[str], facts: Sequence[str]) -> Standing:
    """The node's standing after it reported `labels`, `approved` being what it had before."""
    labels, approved = set(labels), set(approved)
    kept = {label for label in labels if label in approved or is_fact(label, facts)}
    return Standing(sorted(kept), sorted(labels) if kept != labels else None)


def asked_for(standing: Standing) -> list[str]:
    """The labels waiting for an operator: those requested and not approved."""
    return sorted(set(standing.requested or ()) - set(standing.approved))
