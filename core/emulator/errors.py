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


def missing_file(file_name: str, status: int) -> ApiError:
    """A file that is missing, deleted or expired: 403 PERMISSION_DENIED as the service answers (recorded,
    python-genai #1218 and a dify-plugin-daemon log: the id without "files/"), or 404 NOT_FOUND."""
    if status == 403:
        file_id = file_name.removeprefix("files/")
        return ApiError(403, "PERMISSION_DENIED",
                        f"You do not have permission to access the File {file_id} or it may not exist.",
                        note="file:missing")
    return ApiError(404, "NOT_FOUND", f"File {file_name} was not found; it may have been deleted or have expired.",
                    note="file:missing")


def file_not_active(file_name: str) -> ApiError:
    """400 FAILED_PRECONDITION for a file still PROCESSING (or FAILED); wording recorded (expectedparrot/edsl
    #1907)."""
    file_id = file_name.removeprefix("files/")
    return ApiError(400, "FAILED_PRECONDITION",
                    f"The File {file_id} is not in an ACTIVE state and usage is not allowed.",
                    note="input:file-not-active")


def model_not_found(model_id: str, version: str, method: str) -> ApiError:
    """404 NOT_FOUND for an unknown model (wording after the service's generateContent answer; a guess for
    batchGenerateContent and models.get)."""
    return ApiError(404, "NOT_FOUND",
                    f"models/{model_id} is not found for API version {version}, or is not supported for {method}. "
                    "Call ListModels to see the list of available models and their supported methods.",
                    note="model:unknown")


def unsupported_mime_type(mime_type: str) -> ApiError:
    """400 INVALID_ARGUMENT for a refused upload MIME type (recorded: python-genai #1547, cookbook #1008)."""
    return ApiError(400, "INVALID_ARGUMENT", f"Unsupported MIME type: {mime_type}", note="upload:mime-type")


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
