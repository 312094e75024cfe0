"""The matcher's refusal: a C-FIND identifier it cannot serve, with its failure status."""

from __future__ import annotations

# C-FIND failure statuses (PS3.4 C.4.1.1.4)
STATUS_IDENTIFIER_DOES_NOT_MATCH = 0xA900  # Identifier does not match SOP Class
STATUS_UNABLE_TO_PROCESS = 0xC000  # Unable to process


class QueryError(ValueError):
    """A C-FIND identifier the matcher refuses; ``status`` is the failure status."""

    def __init__(self, message: str, status: int = STATUS_UNABLE_TO_PROCESS) -> None:
        super().__init__(message)
        self.status = status
