"""Why the Commander refuses something, in the domain's words.

Services raise these; they know nothing of HTTP. `commander/errors.py` maps each class to a
status and the JSON error envelope, in one place. `code` is the stable, machine-readable
reason (clients and tests match on it); `message` says what happened and what to do.
"""

from __future__ import annotations


class CommanderError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class Invalid(CommanderError):
    """The request asks for something malformed or impossible as stated."""


class Unauthenticated(CommanderError):
    """No credential, or one that proves nothing (unknown, expired, badly signed, replayed)."""


class Forbidden(CommanderError):
    """A known caller asking for what it may not do."""


class NotFound(CommanderError):
    """What the request names does not exist (or is not visible to this caller)."""


class TooLarge(CommanderError):
    """What the request sends is bigger than the Commander keeps (an attachment over its cap)."""


class Conflict(CommanderError):
    """The request does not fit the state things are in now (a stale lease, a final task, …)."""


class TooManyRequests(CommanderError):
    """A limit is reached; `retry_after`, when known, says in how many seconds to try again."""

    def __init__(self, code: str, message: str, retry_after: int | None = None):
        super().__init__(code, message)
        self.retry_after = retry_after
