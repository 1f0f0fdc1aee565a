"""A local Gemini Batch Mode API server that the real google-genai SDK can talk to.

    with Emulator(EmulatorSettings(pending_seconds=0.2)) as emu:
        client = genai.Client(api_key="any", http_options=types.HttpOptions(
            base_url=emu.base_url, api_version="v1beta"))

It speaks the wire protocol of /work/shared/gemini-batch-protocol.md: resumable uploads, files, batches from a
file or inline, result files, a real-time job lifecycle, the batch quotas and faults on demand; it journals
every call. Choices made where Google's behaviour is unconfirmed:

- batches.list pages: default 50, max 100; files.list pages: default 10, max 100 (bigger sizes are capped).
  Lists are newest first (batches: batches_list_order); page tokens are opaque and stable under inserts and
  deletes.
- A call with no API key: 403 PERMISSION_DENIED ("Method doesn't allow unregistered callers ..."); a key other
  than `settings.api_key` (when set): 400 INVALID_ARGUMENT "API key not valid" with ErrorInfo API_KEY_INVALID.
  Upload chunk requests need no key (the SDK sends none).
- By default it answers as the service does (docs/emulator.md lists each knob and its source): uploads are
  PROCESSING for a while (a create naming one: 400 FAILED_PRECONDITION); unknown, deleted or expired files: 403
  PERMISSION_DENIED on get/delete/download (404 with missing_file_status=404); unknown models: 404 on create and
  models.get; the `jsonl` MIME type refused at finalize. A create naming a missing file: 400 INVALID_ARGUMENT.
  Downloading an uploaded (not generated) file: 400 INVALID_ARGUMENT.
- An upload over `max_file_bytes`: 400 INVALID_ARGUMENT. One that would take the live uploaded files over
  `storage_cap_bytes`: 429 RESOURCE_EXHAUSTED (a guess). Any error on an upload chunk ends the session and
  carries `X-Goog-Upload-Status: final`.
- Quota 429s carry the generic message and a Help detail (quota_error_details="help", as recorded); with
  "full" they add QuotaFailure, and creates-per-minute adds RetryInfo (time until the sliding 60 s window frees a
  slot). A rejected create creates nothing and does not count towards creates/minute.
- Token estimate of a request line: ceil(len(line bytes without its terminator) / 4) (see quotas.py).
- `models/{m}:asyncBatchEmbedContent` (the SDK's create_embeddings) makes an embeddings job: the same life cycle,
  quotas and faults; result lines `{"key", "response": {"embedding": {"values": [...]}}}` with deterministic
  unit vectors (the line shape follows the SDK's inline type; the @type names are guesses). docs/emulator.md.
"""

from .emulator import Emulator
from .journal import JournalEntry
from .settings import EmulatorSettings

__all__ = ["Emulator", "EmulatorSettings", "JournalEntry"]
