"""What each call does to the emulator's state, independent of HTTP: one method per call kind.

Choices where Google's behaviour is unconfirmed are listed in the package docstring.
"""

from __future__ import annotations

from collections.abc import Callable

from .batches import BatchMethods
from .calls import Call, Context, Reply
from .files import FileMethods
from .models import ModelMethods
from .uploads import UploadMethods


class Api:
    """Routes a parsed call to the method of its kind."""

    def __init__(self, ctx: Context) -> None:
        uploads, files, batches = UploadMethods(ctx), FileMethods(ctx), BatchMethods(ctx)
        models = ModelMethods(ctx)
        self._methods: dict[str, Callable[[Call], Reply]] = {
            "upload.start": uploads.upload_start,
            "upload.chunk": uploads.upload_chunk,
            "files.get": files.files_get,
            "files.list": files.files_list,
            "files.delete": files.files_delete,
            "files.download": files.files_download,
            "batches.create": batches.batches_create,
            "batches.get": batches.batches_get,
            "batches.list": batches.batches_list,
            "batches.cancel": batches.batches_cancel,
            "batches.delete": batches.batches_delete,
            "models.get": models.models_get,
            "models.list": models.models_list,
            "models.countTokens": models.models_count_tokens,
        }

    def handle(self, call: Call) -> Reply:
        """Run the method of `call.kind`."""
        return self._methods[call.kind](call)
