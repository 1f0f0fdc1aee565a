"""models.get and models.list: Model resources for the known models (settings.models), 404 NOT_FOUND for others."""

from __future__ import annotations

from typing import Any

from .answers import prompt_tokens
from .batches import check_model, is_embedding_model
from .calls import Call, Methods, Reply, json_body
from .errors import invalid_argument
from .settings import KNOWN_MODELS

METHODS = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]
EMBEDDING_METHODS = ["embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent"]


def model_json(model_id: str) -> dict[str, Any]:
    """A Model resource shaped like the service's (limits as published for the 2.x and 3.x families)."""
    words = model_id.replace("gemini-", "Gemini ", 1).replace("-", " ").split(" ")
    display_name = " ".join(word[:1].upper() + word[1:] for word in words)
    if is_embedding_model(model_id):
        return {"name": f"models/{model_id}", "version": "001", "displayName": display_name,
                "description": f"{model_id} (emulated)", "inputTokenLimit": 2048, "outputTokenLimit": 1,
                "supportedGenerationMethods": list(EMBEDDING_METHODS)}
    older = model_id.startswith("gemini-2.0")
    return {
        "name": f"models/{model_id}",
        "version": "001",
        "displayName": display_name,
        "description": f"{model_id} (emulated)",
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 8_192 if older else 65_536,
        "supportedGenerationMethods": list(METHODS),
        "temperature": 1,
        "topP": 0.95,
        "topK": 40 if older else 64,
        "maxTemperature": 2,
        **({} if older else {"thinking": True}),
    }


class ModelMethods(Methods):
    """The Models API call the engine uses to check a model name before it uploads anything."""

    def models_get(self, call: Call) -> Reply:
        """The Model of a known id; 404 NOT_FOUND otherwise (an empty settings.models knows every id)."""
        model_id = call.params["model"]
        call.resource = f"models/{model_id}"
        check_model(self.settings(), model_id, call.params["ver"], "generateContent")
        return Reply(json=model_json(model_id))

    def models_list(self, call: Call) -> Reply:
        """Every known model in one page (an empty settings.models, which accepts any id, lists the usual ones);
        the engine suggests the closest of these names for a mistyped model."""
        known = sorted(m.removeprefix("models/") for m in (self.settings().models or KNOWN_MODELS))
        return Reply(json={"models": [model_json(model_id) for model_id in known]})

    def models_count_tokens(self, call: Call) -> Reply:
        """countTokens of `{"contents": [...]}` or `{"generateContentRequest": {...}}`: {"totalTokens": N} with
        the emulator's own count (a quarter of the text's characters, as its answers' promptTokenCount)."""
        model_id = call.params["model"]
        call.resource = f"models/{model_id}"
        check_model(self.settings(), model_id, call.params["ver"], "countTokens")
        body = json_body(call)
        request = body.get("generateContentRequest", body) if isinstance(body, dict) else None
        if not isinstance(request, dict) or not isinstance(request.get("contents"), list) or not request["contents"]:
            raise invalid_argument("* CountTokensRequest: contents (or generateContentRequest.contents) is required.")
        tokens = prompt_tokens(request)
        return Reply(json={"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]})
