"""Made-up model answers: one GenerateContentResponse or embedding (or error) per request, keyed like the input."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from pathlib import Path
from typing import Any

REQUEST_ERROR = {"code": 3, "message": "Request contains an invalid argument."}
INVALID_LINE_ERROR = {"code": 3, "message": "Invalid JSON payload received. The line is not a JSON object."}
NO_CONTENT_ERROR = {"code": 3, "message": "* EmbedContentRequest.content: required field is not set."}
MAX_EMBEDDING_DIMENSIONS = 3072  # gemini-embedding-001's full size; outputDimensionality above it is refused


def utf8_json(value: Any, **options: Any) -> bytes:
    """JSON as UTF-8 bytes; strings UTF-8 cannot carry (a lone surrogate, e.g. a key "\\ud800" from an input
    line) are written as \\u escapes instead of failing (issue 16: such a key made every batches.list 500)."""
    try:
        return json.dumps(value, ensure_ascii=False, **options).encode()
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, **options).encode()


def _pick(obj: dict[str, Any], camel: str, snake: str) -> Any:
    return obj.get(camel, obj.get(snake))


def prompt_text(request: Any) -> str:
    """The text parts of a GenerateContentRequest's contents, joined (tolerant of odd shapes)."""
    texts: list[str] = []
    contents = request.get("contents") if isinstance(request, dict) else None
    if isinstance(contents, dict):
        contents = [contents]
    for content in contents if isinstance(contents, list) else []:
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
    return " ".join(texts)


def prompt_tokens(request: Any) -> int:
    """The emulator's token count of a request: a quarter of the characters of its text parts (at least 1),
    as its answers' usageMetadata.promptTokenCount and countTokens report it."""
    return max(1, math.ceil(len(prompt_text(request)) / 4))


def response_for(request: Any, model_id: str, key: Any, response_id: str) -> dict[str, Any]:
    """A GenerateContentResponse shaped like the real one (candidates, usageMetadata, modelVersion)."""
    prompt = prompt_text(request)
    summary = " ".join(prompt.split())[:160] or "(no text)"
    text = f"Emulated answer from {model_id}: {summary}"
    config = _pick(request, "generationConfig", "generation_config") if isinstance(request, dict) else None
    mime = _pick(config, "responseMimeType", "response_mime_type") if isinstance(config, dict) else None
    if mime == "application/json":
        text = json.dumps({"key": key, "answer": text})
    prompt_count = prompt_tokens(request)
    answer_tokens = max(1, math.ceil(len(text) / 4))
    return {
        "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP",
                        "index": 0}],
        "usageMetadata": {"promptTokenCount": prompt_count, "candidatesTokenCount": answer_tokens,
                          "totalTokenCount": prompt_count + answer_tokens,
                          "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_count}]},
        "modelVersion": model_id,
        "responseId": response_id,
    }


def response_id(job_name: str, index: int) -> str:
    """A stable 22-character id for one answer."""
    digest = hashlib.sha256(f"{job_name}:{index}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:22]


def embed_text(request: Any) -> str | None:
    """The text parts of an EmbedContentRequest's `content`, joined; None when it has no content object."""
    content = request.get("content") if isinstance(request, dict) else None
    if not isinstance(content, dict):
        return None
    parts = content.get("parts")
    texts = [part["text"] for part in parts if isinstance(part, dict) and isinstance(part.get("text"), str)] \
        if isinstance(parts, list) else []
    return " ".join(texts)


def embedding_values(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector of `dimensions` floats made from the text's SHA-256 (same text, same vector)."""
    raw = b""
    counter = 0
    while len(raw) < 4 * dimensions:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    numbers = [n / 0x7FFF_FFFF for n in struct.unpack(f">{dimensions}i", raw[: 4 * dimensions])]
    norm = math.sqrt(sum(n * n for n in numbers)) or 1.0
    return [round(n / norm, 6) for n in numbers]


def embedding_for(request: Any, dimensions: int) -> dict[str, Any]:
    """A SingleEmbedContentResponse (`{"embedding": {"values": [...]}}`), or `{"error": ...}` for a request with
    no content or an outputDimensionality out of range (1..3072)."""
    text = embed_text(request)
    if text is None:
        return {"error": NO_CONTENT_ERROR}
    wanted = _pick(request, "outputDimensionality", "output_dimensionality")
    if wanted is not None:
        if not isinstance(wanted, int) or isinstance(wanted, bool) or not 0 < wanted <= MAX_EMBEDDING_DIMENSIONS:
            return {"error": {"code": 3, "message": f"* EmbedContentRequest.output_dimensionality: must be between "
                                                    f"1 and {MAX_EMBEDDING_DIMENSIONS}, got {wanted!r}."}}
        dimensions = wanted
    return {"response": {"embedding": {"values": embedding_values(text, dimensions)}}}


def result_line(line: bytes, index: int, job_name: str, model_id: str, error: bool,
                embedding_dimensions: int | None = None) -> dict[str, Any]:
    """The output line for one input line: `{"key", "response"}` or `{"key", "error"}`; for an embeddings job
    (`embedding_dimensions` set) the response is `{"embedding": {"values": [...]}}`."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        obj = None
    if not isinstance(obj, dict):
        return {"error": INVALID_LINE_ERROR}
    out: dict[str, Any] = {}
    if "key" in obj:
        out["key"] = obj["key"]
    request = obj.get("request", obj if "key" not in obj else None)
    if error:
        out["error"] = REQUEST_ERROR
    elif embedding_dimensions is not None:
        out.update(embedding_for(request, embedding_dimensions))
    else:
        out["response"] = response_for(request, model_id, obj.get("key"), response_id(job_name, index))
    return out


def write_file_results(source: Path, target: Path, job_name: str, model_id: str, error_lines: list[int],
                       limit: int | None = None, embedding_dimensions: int | None = None) -> tuple[int, int, int, str]:
    """Write one result line per request line of `source` (the first `limit` only, when given: a partial
    output); returns (succeeded, failed, size, sha256 hex)."""
    errors = set(error_lines)
    succeeded = failed = size = 0
    digest = hashlib.sha256()
    index = 0
    with source.open("rb") as inp, target.open("wb") as out:
        for raw in inp:
            if not raw.strip():
                continue
            if limit is not None and index >= limit:
                break
            line = result_line(raw, index, job_name, model_id, index in errors, embedding_dimensions)
            if "error" in line:
                failed += 1
            else:
                succeeded += 1
            data = utf8_json(line) + b"\n"
            out.write(data)
            digest.update(data)
            size += len(data)
            index += 1
    return succeeded, failed, size, digest.hexdigest()


def file_results_inline(source: Path, job_name: str, model_id: str, error_lines: list[int],
                        embedding_dimensions: int | None = None) -> tuple[list[dict[str, Any]], int, int]:
    """The results of a file-input job as inlinedResponses items (`response` or `error`, then `metadata.key`
    from the input line's key, as in section 3.5); returns (items, succeeded, failed)."""
    errors = set(error_lines)
    items: list[dict[str, Any]] = []
    failed = 0
    with source.open("rb") as inp:
        for raw in inp:
            if not raw.strip():
                continue
            line = result_line(raw, len(items), job_name, model_id, len(items) in errors, embedding_dimensions)
            entry: dict[str, Any] = {"error": line["error"]} if "error" in line else {"response": line["response"]}
            failed += "error" in line
            if "key" in line:
                entry["metadata"] = {"key": line["key"]}
            items.append(entry)
    return items, len(items) - failed, failed


def inline_results(requests: list[dict[str, Any]], job_name: str, model_id: str, error_lines: list[int],
                   embedding_dimensions: int | None = None) -> tuple[list[dict[str, Any]], int, int]:
    """The inlinedResponses items (metadata echoed); returns (items, succeeded, failed)."""
    errors = set(error_lines)
    items: list[dict[str, Any]] = []
    for index, item in enumerate(requests):
        entry: dict[str, Any] = {}
        if index in errors:
            entry["error"] = REQUEST_ERROR
        elif embedding_dimensions is not None:
            entry.update(embedding_for(item.get("request"), embedding_dimensions))
        else:
            metadata = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
            entry["response"] = response_for(item.get("request"), model_id, metadata.get("key"),
                                             response_id(job_name, index))
        if "metadata" in item:
            entry["metadata"] = item["metadata"]
        items.append(entry)
    failed = sum("error" in entry for entry in items)
    return items, len(requests) - failed, failed
