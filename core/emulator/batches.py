"""batches.create (batchGenerateContent or asyncBatchEmbedContent; file or inline input, quotas checked), get,
list, cancel and delete."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections.abc import Callable
from typing import Any

from . import lifecycle
from .answers import utf8_json
from .calls import Call, Methods, Reply, json_body, page_size, pick
from .errors import file_not_active, invalid_argument, model_not_found, not_found
from .quotas import check_capacity
from .settings import EmulatorSettings
from .store import FileRecord, JobRecord, paginate
from .wire import operation_json

BATCHES_PAGE_DEFAULT, BATCHES_PAGE_MAX = 50, 100
INLINE_LIMIT_BYTES = 20 * 1024 * 1024


class BatchMethods(Methods):
    """The Batches API calls."""

    def batches_create(self, call: Call) -> Reply:
        """Check input and quotas, then make the job; answers the PENDING Operation. An asyncBatchEmbedContent
        create makes an embeddings job: the same life cycle, quotas and faults, with embeddings as results."""
        raw_size = call.body.remaining
        method = call.params.get("method") or "batchGenerateContent"
        embed = method == "asyncBatchEmbedContent"
        body = json_body(call)
        batch = pick(body, "batch")
        if not isinstance(batch, dict):
            request_type = "AsyncBatchEmbedContentRequest" if embed else "BatchGenerateContentRequest"
            raise invalid_argument(f"* {request_type}.batch: required field is missing.")
        model = f"models/{call.params['model']}"
        model_id = call.params["model"]
        display_name = pick(batch, "displayName", "display_name")
        call.display_name = display_name if isinstance(display_name, str) else None
        source = pick(batch, "inputConfig", "input_config")
        file_name = pick(source, "fileName", "file_name")
        requests = pick(pick(source, "requests"), "requests")
        settings = self.settings()
        check_model(settings, model_id, call.params["ver"], method)
        check_method(settings, model_id, call.params["ver"], method)
        priority = batch.get("priority")
        with self.store.lock:
            lifecycle.advance(self.store, call.now)
            self.store.create_window.check(settings.creates_per_minute, model_id, call.now,
                                           settings.create_window_seconds, settings.quota_error_details)
            if file_name is not None:
                record = self._input_file(file_name, call.now)
                count, tokens, sha = record.request_count, record.token_estimate, record.sha256_hex
                inline = None
            elif isinstance(requests, list) and requests:
                if raw_size > INLINE_LIMIT_BYTES:
                    raise invalid_argument(f"Request payload size exceeds the limit: {INLINE_LIMIT_BYTES} bytes.")
                if not all(isinstance(r, dict) for r in requests):
                    raise invalid_argument("* BatchGenerateContentRequest.batch.input_config.requests: "
                                           "every request must be an object.")
                record, inline, sha, count = None, requests, None, len(requests)
                tokens = sum(math.ceil(len(utf8_json(r, separators=(",", ":"))) / 4) for r in requests)
            else:
                raise invalid_argument("* BatchGenerateContentRequest.batch.input_config: either file_name or "
                                       "a non-empty requests list is required.")
            active = [self.store.jobs[n] for n in self.store.active]
            check_capacity(settings, model=model_id, job_tokens=tokens, unfinished_jobs=len(active),
                           enqueued_tokens=sum(j.tokens for j in active if j.model == model))
            job = self._new_job(call, settings, model, display_name, record, inline, count, tokens, sha,
                                priority)
            if embed:
                job.embedding_dimensions = settings.embedding_dimensions
            self.store.create_window.accepted(call.now)
            reply = Reply(json=operation_json(job, call.now))
        call.sha256, call.resource = sha, job.name
        return reply

    def _input_file(self, file_name: Any, now: float) -> FileRecord:
        if not isinstance(file_name, str) or not file_name.startswith("files/"):
            raise invalid_argument(f"* BatchGenerateContentRequest.batch.input_config.file_name: "
                                   f"must be of the form files/{{id}}, got {file_name!r}.")
        record = self.store.live_file(file_name, now)
        if record is None:
            raise invalid_argument(f"Input file {file_name} was not found; it may have been deleted or have "
                                   "expired.", note="input:file-gone")
        if record.state(now) != "ACTIVE":
            raise file_not_active(file_name)
        if record.request_count == 0:
            raise invalid_argument(f"Input file {file_name} contains no requests.")
        return record

    def _new_job(self, call: Call, settings: EmulatorSettings, model: str, display_name: Any,
                 record: FileRecord | None, inline: list[dict[str, Any]] | None, count: int, tokens: int,
                 sha: str | None, priority: Any) -> JobRecord:
        """Make and keep the job (caller holds the lock and has passed every check)."""
        store = self.store
        if store.fail_next > 0:
            store.fail_next -= 1
            planned_failure = True
        else:
            planned_failure = self.faults.job_fails()
        job = JobRecord(
            serial=store.next_serial(), name=store.new_job_name(),
            display_name=display_name if isinstance(display_name, str) else None, model=model,
            input_file=record.name if record else None, sha256=sha, inline_requests=inline,
            request_count=count, tokens=tokens, create_time=call.now,
            pending_seconds=max(0.0, settings.pending_seconds),
            running_seconds=max(0.0, settings.running_seconds + settings.running_seconds_per_request * count),
            ttl_seconds=settings.job_ttl_seconds, planned_failure=planned_failure,
            error_rate=settings.request_error_rate, seed=settings.seed,
            result_delay=max(0.0, settings.result_file_delay_seconds), file_ttl=settings.file_ttl_seconds,
            partial_output_on_expiry=settings.partial_output_on_expiry,
            priority=str(priority) if priority not in (None, 0, "0", "") else None,
            inline_output=record is not None and 0 < count <= settings.inline_results_max_requests,
            flat_stats=settings.flat_batch_stats,
        )
        if record is not None:
            job.input_path = store.new_path("input")
            try:
                os.link(record.path, job.input_path)
            except OSError:
                shutil.copyfile(record.path, job.input_path)
        store.jobs[job.name] = job
        store.active.add(job.name)
        return job

    def _visible_job(self, call: Call) -> JobRecord:
        name = f"batches/{call.params['job_id']}"
        call.resource = name
        lifecycle.advance(self.store, call.now)
        job = self.store.visible_job(name)
        if job is None:
            raise not_found(f"Batch {name} was not found.")
        call.display_name = job.display_name
        return job

    def batches_get(self, call: Call) -> Reply:
        """The Operation of one job (404 once deleted)."""
        with self.store.lock:
            return Reply(json=operation_json(self._visible_job(call), call.now))

    def batches_list(self, call: Call) -> Reply:
        """One page of Operations under "operations", in the order of settings.batches_list_order."""
        size = page_size(call, BATCHES_PAGE_DEFAULT, BATCHES_PAGE_MAX)
        settings = self.settings()
        key_of = list_order(settings.batches_list_order, settings.seed)
        with self.store.lock:
            lifecycle.advance(self.store, call.now)
            page, token = paginate(self.store.visible_jobs(), key_of, size, call.query.get("pageToken"))
            out: dict[str, Any] = {}
            if page:
                out["operations"] = [operation_json(j, call.now) for j in page]
        if token:
            out["nextPageToken"] = token
        return Reply(json=out)

    def batches_cancel(self, call: Call) -> Reply:
        """End an unfinished job CANCELLED (a finished one is left as it is); answers {}."""
        with self.store.lock:
            job = self._visible_job(call)
            if job.end_state is None:
                lifecycle.end(self.store, job, lifecycle.CANCELLED, call.now)
        return Reply(json={})

    def batches_delete(self, call: Call) -> Reply:
        """Remove a job from get and list (stopping it if unfinished); answers {}."""
        with self.store.lock:
            job = self._visible_job(call)
            if job.end_state is None:  # deleting stops the job: it ends as if cancelled
                lifecycle.end(self.store, job, lifecycle.CANCELLED, call.now)
            job.deleted = True
        return Reply(json={})


def check_model(settings: EmulatorSettings, model_id: str, version: str, method: str) -> None:
    """404 NOT_FOUND unless the model is in settings.models (an empty set accepts any)."""
    known = {m.removeprefix("models/") for m in settings.models}
    if known and model_id not in known:
        raise model_not_found(model_id, version, method)


def is_embedding_model(model_id: str) -> bool:
    """Whether a model id names an embedding model (gemini-embedding-001, text-embedding-004, ...)."""
    return "embedding" in model_id


def check_method(settings: EmulatorSettings, model_id: str, version: str, method: str) -> None:
    """404 NOT_FOUND for a batch method the model does not offer: asyncBatchEmbedContent on a generative model,
    batchGenerateContent on an embedding model (the service's "not supported for" wording; its answer to a batch
    create of the wrong kind is a guess). Off when settings.models is empty (any id accepted)."""
    if settings.models and is_embedding_model(model_id) != (method == "asyncBatchEmbedContent"):
        raise model_not_found(model_id, version, method)


def list_order(order: str, seed: int) -> Callable[[JobRecord], tuple[int, ...]]:
    """The sort key of batches.list: newest first, oldest first, or a seeded shuffle that depends on each job's
    name only, so the order of the jobs present is stable while jobs come and go and page tokens keep working."""
    if order == "oldest":
        return lambda job: (job.serial,)
    if order == "shuffled":
        def shuffled(job: JobRecord) -> tuple[int, ...]:
            digest = hashlib.sha256(f"{seed}:{job.name}".encode()).digest()
            return int.from_bytes(digest[:8], "big"), job.serial
        return shuffled
    return lambda job: (-job.serial,)
