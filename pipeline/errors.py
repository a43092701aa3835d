"""Exceptions raised by emo-prep. The library raises; the CLI translates at the edge.

    EmoPrepError
    +-- InputError              our input is at fault: carries a check code, a hint, a value
    +-- ModelError              a model file is missing or its sha256 does not match MANIFEST
    +-- UsageError              misuse of our API (closed object, missing key, bad options)
    +-- GeometryError           a geometry file is unreadable, not JSON or holds a bad value
    +-- LedgerLockedError       another process is submitting from the same ledger
    +-- APIError                anything between us and DashScope; carries request_id
        +-- APIConnectionError  no answer (refused, reset, DNS)
        |   +-- APITimeoutError     ... within the time limit
        +-- APIStatusError      the service answered with an error status: status_code, code
        |   +-- AuthenticationError   401 / 403 (key, region, permissions, policy)
        |   +-- ThrottledError        429
        |   +-- InvalidRequestError   other 4xx, with the service's code (InvalidFile.*, ...)
        |   +-- ServerError           5xx
        +-- PortraitRejected    emo-detect said check_pass=false (either answer shape)
        +-- TaskFailed          the task ended FAILED, CANCELED or UNKNOWN
        +-- TaskTimeout         waiting passed its deadline; the task may still finish
        +-- AmbiguousSubmitError  a submit was sent but its answer was lost: a paid task may
                                  exist; never resent blindly

No message, repr or attribute ever holds the API key.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EmoPrepError", "InputError", "ModelError", "UsageError", "LedgerLockedError", "APIError",
           "APIConnectionError", "APITimeoutError", "APIStatusError", "AuthenticationError", "ThrottledError",
           "InvalidRequestError", "ServerError", "PortraitRejected", "TaskFailed", "TaskTimeout",
           "AmbiguousSubmitError", "GeometryError"]


class EmoPrepError(Exception):
    """Base of every error emo-prep raises on purpose."""


class InputError(EmoPrepError):
    """The photo, audio or their source cannot be used; `code` is a finding code."""

    def __init__(self, code: str, message: str, *, hint: str = "", value: float | None = None,
                 limit: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.value = value
        self.limit = limit


class ModelError(EmoPrepError):
    """A model file under models/ is missing or altered."""


class UsageError(EmoPrepError, RuntimeError):
    """The API was used in a way it does not support."""


class GeometryError(EmoPrepError, ValueError):
    """A geometry file (or Geometry value) cannot be used; `hint` says what to change."""

    def __init__(self, message: str, *, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})"


class LedgerLockedError(EmoPrepError):
    """A ledger's submit lock is held by another process; `holder` names it (pid, host, since)."""

    def __init__(self, message: str, *, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


class APIError(EmoPrepError):
    """A call to the service (or the sandbox) did not give a usable answer."""

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


class APIConnectionError(APIError):
    """The service could not be reached, or the connection broke before an answer."""


class APITimeoutError(APIConnectionError):
    """No answer within the configured timeout."""


class APIStatusError(APIError):
    """The service answered with an error status and (usually) a code and message."""

    def __init__(self, message: str, *, status_code: int, code: str | None = None,
                 request_id: str | None = None, body: Any = None) -> None:
        super().__init__(message, request_id=request_id)
        self.status_code = status_code
        self.code = code
        self.body = body

    def __str__(self) -> str:
        rid = f" (request_id {self.request_id})" if self.request_id else ""
        return f"HTTP {self.status_code} {self.code or ''}: {self.message}{rid}".replace("  ", " ")


class AuthenticationError(APIStatusError):
    """401/403: the key is wrong, missing, from another region, or not allowed."""


class ThrottledError(APIStatusError):
    """429: too many requests; retried with backoff where safe, raised when retries ran out."""


class InvalidRequestError(APIStatusError):
    """A 4xx answer about the request itself (InvalidParameter, InvalidURL, InvalidFile.*)."""


class ServerError(APIStatusError):
    """5xx: the service failed."""


class PortraitRejected(APIError):
    """emo-detect-v1 rejected the photo; `finding_code` is our matching check code."""

    def __init__(self, message: str, *, code: str | None, finding_code: str | None,
                 request_id: str | None = None) -> None:
        super().__init__(message, request_id=request_id)
        self.code = code
        self.finding_code = finding_code


class TaskFailed(APIError):
    """The task ended without a video (FAILED, CANCELED, or UNKNOWN: expired or never existed)."""

    def __init__(self, message: str, *, task_id: str, status: str, code: str | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(message, request_id=request_id)
        self.task_id = task_id
        self.status = status
        self.code = code


class TaskTimeout(APIError):
    """Waiting gave up; the task may still finish: query it again with its task_id."""

    def __init__(self, message: str, *, task_id: str, status: str) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.status = status


class AmbiguousSubmitError(APIError):
    """The submit request may have reached the service but no answer came back.

    A paid task may exist. Do not resend: find it with the task list (created after
    `sent_at`, model emo-v1) or wait and query. `body_sha256` identifies the request body.
    """

    def __init__(self, message: str, *, sent_at: float, body_sha256: str) -> None:
        super().__init__(message)
        self.sent_at = sent_at
        self.body_sha256 = body_sha256
