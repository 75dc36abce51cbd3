"""The wire protocol's signatures: what they cover, and what they refuse."""

from __future__ import annotations

import pytest

from m3shd import wire

KEY = bytes(range(32))


def test_canonical_json_is_sorted_compact_utf8():
    assert wire.canonical_json({"b": 1, "a": ["é", 2.5]}) == '{"a":["é",2.5],"b":1}'.encode()


def test_a_signed_request_verifies_once_built():
    headers = wire.sign_request(KEY, "post", "/api/nodes/1/claim", b'{"open_slots":1}')
    nonce = wire.check_request(KEY, headers, "POST", "/api/nodes/1/claim", b'{"open_slots":1}')
    assert nonce == headers[wire.HEADER_NONCE]


@pytest.mark.parametrize("change, message", [
    (dict(body=b'{"open_slots":2}'), "bad request signature"),
    (dict(path="/api/nodes/2/claim"), "bad request signature"),
    (dict(method="GET"), "bad request signature"),
    (dict(key=bytes(32)), "bad request signature"),
    (dict(now_shift=301), "more than 300 s"),
    (dict(now_shift=-301), "more than 300 s"),
    (dict(drop=wire.HEADER_SIGNATURE), "missing"),
])
def test_a_changed_request_is_refused(change, message):
    body, path = b'{"open_slots":1}', "/api/nodes/1/claim"
    headers = wire.sign_request(KEY, "POST", path, body, now=1_000_000)
    if "drop" in change:
        headers.pop(change["drop"])
    if "header" in change:
        headers[change["header"][0]] = change["header"][1]
    with pytest.raises(ValueError, match=message):
        wire.check_request(change.get("key", KEY), headers, change.get("method", "POST"), change.get("path", path),
                           change.get("body", body), now=1_000_000 + change.get("now_shift", 0))


@pytest.mark.parametrize("header, value", [
    (wire.HEADER_TIMESTAMP, "12a"),
    (wire.HEADER_TIMESTAMP, "9" * 400),     # int() takes it, but the skew check's float arithmetic overflowed
    (wire.HEADER_TIMESTAMP, "9" * 5000),    # past int()'s digit limit
    (wire.HEADER_TIMESTAMP, "\u00b2"),       # str.isdigit() says yes, int() says no
    (wire.HEADER_TIMESTAMP, "\u0661" * 10),  # Arabic-Indic digits: int() would take them
    (wire.HEADER_NONCE, "x"),
    (wire.HEADER_NONCE, "../../etc/passwd!"),
    (wire.HEADER_NONCE, "\u00e9" * 16),      # letters, but not ASCII
])
def test_a_malformed_signature_header_is_told_apart_from_a_bad_signature(header, value):
    body, path = b'{"open_slots":1}', "/api/nodes/1/claim"
    headers = wire.sign_request(KEY, "POST", path, body) | {header: value}
    with pytest.raises(wire.MalformedSignature, match=f"{header} must be"):
        wire.check_request(KEY, headers, "POST", path, body)


def test_result_signature_covers_every_field_but_itself():
    result = {"task_id": 1, "attempt": 2, "output": "42", "usage": {"input_tokens": 3}}
    signed = dict(result, signature=wire.sign_result(KEY, result))
    assert wire.check_result(KEY, signed)
    assert not wire.check_result(KEY, dict(signed, output="43"))
    assert not wire.check_result(KEY, dict(signed, usage={"input_tokens": 4}))
    assert not wire.check_result(bytes(32), signed)
    assert not wire.check_result(KEY, result)  # unsigned
