"""Who may deliver to a hook. Every check compares in constant time (hmac.compare_digest), and
GitHub's signature is checked over the raw body before a byte of it is parsed."""

from __future__ import annotations

import hashlib
import hmac

from commander.exceptions import Unauthenticated

SIGNATURE_HEADER = "X-Hub-Signature-256"


def signature(secret: bytes, raw: bytes) -> str:
    """What GitHub sends in X-Hub-Signature-256: `sha256=` and the HMAC-SHA256 of the body, in hex."""
    return "sha256=" + hmac.new(secret, raw, hashlib.sha256).hexdigest()


def check_signature(secret: bytes, raw: bytes, presented: str | None) -> None:
    if not presented:
        raise Unauthenticated("bad_signature", f"send {SIGNATURE_HEADER}: sha256=<HMAC-SHA256 of the body with the "
                                               f"hook's secret>")
    if not hmac.compare_digest(signature(secret, raw).encode(), presented.encode()):
        raise Unauthenticated("bad_signature", f"{SIGNATURE_HEADER} does not match the body signed with this "
                                               f"hook's secret")


def check_secret(secret: bytes, authorization: str | None, in_url: str | None) -> None:
    """The hook's secret as `Authorization: Bearer <secret>` or `?secret=<secret>`."""
    scheme, _, bearer = (authorization or "").partition(" ")
    presented = bearer.strip() if scheme.lower() == "bearer" else in_url
    if not presented:
        raise Unauthenticated("bad_secret", "send the hook's secret as `Authorization: Bearer <secret>` or in the "
                                            "URL as ?secret=<secret>")
    if not hmac.compare_digest(secret, presented.encode()):
        raise Unauthenticated("bad_secret", "that is not this hook's secret")
