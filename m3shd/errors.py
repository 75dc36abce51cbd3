"""What a Commander API call can raise; apart from the client so importing it pulls in no HTTP stack."""


class CommanderError(Exception):
    """The Commander answered with an error (`status`, `code`, `message`)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{message} ({status} {code})")
        self.status, self.code, self.message = status, code, message


class CommanderUnreachable(Exception):
    """No answer from the Commander (down, wrong URL, network)."""


class CommanderUntrusted(CommanderUnreachable):
    """The Commander did not prove who it is: its certificate did not verify against the pinned
    CA, or its CA is not the one a hash named (m3shd/trust.py). Nothing was sent to it."""
