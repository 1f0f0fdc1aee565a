"""Google's error envelope: `{"error": {"code", "message", "status", "details"}}`, raised as ApiError."""

from __future__ import annotations

from typing import Any

RATE_LIMITS_URL = "https://ai.google.dev/gemini-api/docs/rate-limits"
HELP_DETAIL = {
    "@type": "type.googleapis.com/google.rpc.Help",
    "links": [{"description": "Learn more about Gemini API quotas", "url": RATE_LIMITS_URL}],
}


class ApiError(Exception):
    """An error answer; `note` goes into the journal (e.g. "quota:enqueued-tokens", "fault:5xx")."""

    def __init__(self, code: int, status: str, message: str, details: list[dict[str, Any]] | None = None,
                 note: str | None = None) -> None:
        super().__init__(f"{code} {status}: {message}")
        self.code = code
        self.status = status
        self.message = message
        self.details = details
        self.note = note

    def body(self) -> dict[str, Any]:
        """The JSON body Google sends for this error."""
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}


def invalid_argument(message: str, note: str | None = None) -> ApiError:
    """400 INVALID_ARGUMENT."""
    return ApiError(400, "INVALID_ARGUMENT", message, note=note or "invalid-argument")


def not_found(message: str = "Requested entity was not found.") -> ApiError:
    """404 NOT_FOUND."""
    return ApiError(404, "NOT_FOUND", message, note="not-found")


def already_exists(message: str) -> ApiError:
    """409 ALREADY_EXISTS."""
    return ApiError(409, "ALREADY_EXISTS", message, note="already-exists")


def missing_key() -> ApiError:
    """403 PERMISSION_DENIED, as Google answers a call that carries no API key."""
    return ApiError(
        403, "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API.",
        note="auth:missing-key",
    )


def invalid_key() -> ApiError:
    """400 INVALID_ARGUMENT with ErrorInfo API_KEY_INVALID, as Google answers a wrong API key."""
    return ApiError(
        400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
        details=[
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
             "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
            {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
             "message": "API key not valid. Please pass a valid API key."},
        ],
        note="auth:invalid-key",
    )


def server_error(code: int) -> ApiError:
    """500 INTERNAL or 503 UNAVAILABLE with Google's wording."""
    if code == 503:
        return ApiError(503, "UNAVAILABLE", "The service is currently unavailable.", note="fault:5xx")
    return ApiError(
        500, "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
        note="fault:5xx",
    )
