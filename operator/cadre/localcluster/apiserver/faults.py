"""Errors a real API server gives under load or contention, on demand, for tests: a 500 when
etcd hiccups, a 409 when another writer got there first, a 429 with Retry-After under
priority-and-fairness. Nothing is injected unless a test asks; the request is refused before
it does anything, exactly as a real failure would leave it."""

from __future__ import annotations

from dataclasses import dataclass

from cadre.localcluster.apiserver.status import ApiError

_ERRORS = {
    409: ("Conflict", "Operation cannot be fulfilled: the object has been modified; please apply"
                      " your changes to the latest version and try again (injected)"),
    429: ("TooManyRequests", "too many requests, please try again later (injected)"),
    500: ("InternalError", "an error on the server (\"etcdserver: request timed out\") has"
                           " prevented the request from succeeding (injected)"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"
                                " (injected)"),
}  # fmt: skip


@dataclass
class Fault:
    verb: str
    resource: str
    code: int
    times: int
    subresource: str = ""
    client: str = ""
    """Only requests from this client (the User-Agent's product, e.g. ``kopf``); "" any."""
    served: int = 0


class Faults:
    """Armed faults; ``check`` is called for every resource request after authorization."""

    def __init__(self) -> None:
        self.armed: list[Fault] = []

    def inject(
        self, verb: str, resource: str, code: int, times: int = 1, subresource: str = "",
        client: str = "",
    ) -> Fault:  # fmt: skip
        if code not in _ERRORS:
            raise ValueError(f"no injectable error {code}; choose from {sorted(_ERRORS)}")
        fault = Fault(verb, resource, code, times, subresource, client)
        self.armed.append(fault)
        return fault

    def check(self, verb: str, resource: str, subresource: str, client: str) -> None:
        for fault in self.armed:
            if (
                fault.served < fault.times
                and fault.verb == verb
                and fault.resource == resource
                and fault.subresource == subresource
                and fault.client in ("", client)
            ):
                fault.served += 1
                reason, message = _ERRORS[fault.code]
                details = {"retryAfterSeconds": 1} if fault.code == 429 else None
                raise ApiError(fault.code, reason, message, details)
