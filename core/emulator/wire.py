"""The JSON shapes on the wire: File, the batch Operation, batchStats, timestamps (proto3 JSON rules)."""

from __future__ import annotations

import base64
import time
from typing import Any

from . import lifecycle
from .store import FileRecord, JobRecord

BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
# Embeddings jobs (asyncBatchEmbedContent): the resource is an EmbedContentBatch (its name is in the REST method
# updateEmbedContentBatch); the @type strings are by analogy with the recorded GenerateContentBatch ones.
EMBED_BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.EmbedContentBatch"
EMBED_OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.EmbedContentBatchOutput"


def timestamp(t: float) -> str:
    """RFC 3339 UTC with nanoseconds, e.g. 2025-12-10T18:27:01.407650525Z."""
    nanos = round(t * 1_000_000_000)
    seconds, frac = divmod(nanos, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


def file_json(record: FileRecord, base_url: str, now: float) -> dict[str, Any]:
    """The File resource at `now`: int64 as strings, sha256Hash base64, uri and downloadUri on the emulator;
    `state` PROCESSING, ACTIVE or FAILED (with `error`)."""
    file_id = record.name.removeprefix("files/")
    out: dict[str, Any] = {"name": record.name}
    if record.display_name:
        out["displayName"] = record.display_name
    out.update({
        "mimeType": record.mime_type,
        "sizeBytes": str(record.size_bytes),
        "createTime": timestamp(record.create_time),
        "updateTime": timestamp(record.active_at if now >= record.active_at > record.create_time
                                else record.create_time),
        "expirationTime": timestamp(record.expiration_time),
        "sha256Hash": base64.b64encode(bytes.fromhex(record.sha256_hex)).decode(),
        "uri": f"{base_url}/v1beta/files/{file_id}",
    })
    if record.source == "GENERATED":
        out["downloadUri"] = f"{base_url}/download/v1beta/files/{file_id}:download?alt=media"
    state = record.state(now)
    out["state"] = state
    out["source"] = record.source
    if state == "FAILED" and record.error is not None:
        out["error"] = record.error
    return out


def batch_stats(status: lifecycle.JobStatus) -> dict[str, str]:
    """batchStats with int64 strings and zero counts left out."""
    counts = {
        "requestCount": status.request_count,
        "successfulRequestCount": status.succeeded,
        "failedRequestCount": status.failed,
        "pendingRequestCount": status.pending,
    }
    return {key: str(value) for key, value in counts.items() if value}


def operation_json(job: JobRecord, now: float) -> dict[str, Any]:
    """The long-running Operation named batches/{id}, with the GenerateContentBatch (or, for an embeddings job,
    the EmbedContentBatch) in `metadata`."""
    status = lifecycle.status(job, now)
    embed = job.embedding_dimensions is not None
    meta: dict[str, Any] = {"@type": EMBED_BATCH_TYPE if embed else BATCH_TYPE, "model": job.model}
    if job.display_name:
        meta["displayName"] = job.display_name
    if job.input_file is not None:
        meta["inputConfig"] = {"fileName": job.input_file}
    output = lifecycle.output(job)
    if output is not None:
        meta["output"] = output
    meta["createTime"] = timestamp(job.create_time)
    if status.end_time is not None:
        meta["endTime"] = timestamp(status.end_time)
    meta["updateTime"] = timestamp(status.update_time)
    meta["batchStats"] = batch_stats(status)
    meta["state"] = status.state
    if job.priority:
        meta["priority"] = job.priority
    meta["name"] = job.name
    op: dict[str, Any] = {"name": job.name, "metadata": meta}
    if status.state in lifecycle.ENDED:
        op["done"] = True
        if output is not None:
            op["response"] = {"@type": EMBED_OUTPUT_TYPE if embed else OUTPUT_TYPE, **output}
        elif job.end_error is not None:
            op["error"] = job.end_error
    return op
