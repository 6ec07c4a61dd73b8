"""What a failed model call means, pure: the SDK has already retried it (429, 5xx, 529 and
dropped connections, honouring ``retry-after``); what reaches the session is either worth
another try later (the API is busy or briefly down) or final (the request itself is wrong).
A prompt over the context window is its own case: compacting, not waiting, is the cure."""

from __future__ import annotations

from dataclasses import dataclass

import anthropic
import httpx2

PROMPT_TOO_LONG = "prompt is too long"


@dataclass(frozen=True)
class ModelFailure:
    reason: str
    """The Task's failure reason should the session end on it."""
    message: str
    retryable: bool
    status: int | None = None
    error_type: str = ""
    retry_after: float | None = None
    """Seconds the API asked to wait (``retry-after-ms`` or ``retry-after``), if it said."""
    too_long: bool = False
    """The prompt is over the model's context window."""

    def event(self) -> dict[str, object]:
        """The ``span.model_request_error`` fields."""
        return {
            "status": self.status,
            "error_type": self.error_type,
            "message": self.message[:2000],
            "retry_after": self.retry_after,
            "reason": self.reason,
        }


def _retry_after(headers: httpx2.Headers) -> float | None:
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(float(value) / scale, 0.0)
        except ValueError:
            continue  # an HTTP date: the backoff applies instead
    return None


def classify(err: Exception) -> ModelFailure | None:
    """The failure an exception from a model call stands for; None if it is not one."""
    if isinstance(err, anthropic.APIStatusError):
        status = err.status_code
        body = err.body if isinstance(err.body, dict) else {}
        detail = body.get("error")
        error_type = str(detail.get("type") or "") if isinstance(detail, dict) else ""
        message = f"the model API answered {status}: {err.message}"
        retry_after = _retry_after(err.response.headers)
        if status == 400 and PROMPT_TOO_LONG in str(err.message):
            return ModelFailure("ContextWindowExceeded", message, False, status, error_type,
                                too_long=True)  # fmt: skip
        # An error event inside a stream arrives with the stream's 200: its type decides.
        if status == 429 or error_type == "rate_limit_error":
            return ModelFailure("ModelRateLimited", message, True, status, error_type, retry_after)
        if status == 529 or error_type == "overloaded_error":
            return ModelFailure("ModelOverloaded", message, True, status, error_type, retry_after)
        if status >= 500 or error_type == "api_error":
            return ModelFailure("ModelError", message, True, status, error_type, retry_after)
        return ModelFailure("ModelError", message, False, status, error_type)
    cut = (httpx2.RemoteProtocolError, httpx2.ReadError)
    if isinstance(err, anthropic.APIConnectionError) and not isinstance(err.__cause__, cut):
        return ModelFailure("ModelUnreachable", f"the model API could not be reached: {err}", True)
    if isinstance(err, anthropic.APIConnectionError | httpx2.TransportError):
        # The SDK retries a request that fails before its response starts; a streamed response
        # whose connection drops halfway (the body ends before message_stop) surfaces here.
        cause = err.__cause__ or err
        return ModelFailure(
            "ModelStreamInterrupted", f"the model's response stream was cut: {cause}", True
        )
    return None
