"""countTokens on the emulator: the real SDK and the raw REST form get {"totalTokens": N}, the emulator's estimate."""

from __future__ import annotations

import json
import math

import pytest
from gembatch.core.emulator import Emulator
from google import genai
from google.genai import errors

from .conftest import make_client


def _raw_count(client: genai.Client, model: str, body: dict) -> dict:
    return json.loads(client._api_client.request("post", f"models/{model}:countTokens", body).body)


def test_the_sdk_counts_tokens(emu: Emulator, client: genai.Client) -> None:
    text = "Describe the process of photosynthesis."
    counted = client.models.count_tokens(model="gemini-2.5-flash", contents=text)
    assert counted.total_tokens == math.ceil(len(text) / 4)
    assert [e.kind for e in emu.journal()] == ["models.countTokens"]


def test_a_whole_batch_request_is_counted_like_its_answer(emu: Emulator, client: genai.Client) -> None:
    """The count of a generateContentRequest equals the promptTokenCount the emulator's answers report."""
    request = {"model": "models/gemini-2.5-flash", "contents": [
        {"role": "user", "parts": [{"text": "a" * 37}, {"text": "b" * 10}]},
        {"role": "model", "parts": [{"text": "c" * 5}]}]}
    reply = _raw_count(client, "gemini-2.5-flash", {"generateContentRequest": request})
    assert reply["totalTokens"] == math.ceil(len("a" * 37 + " " + "b" * 10 + " " + "c" * 5) / 4)


def test_no_contents_is_invalid_argument(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as caught:
        _raw_count(client, "gemini-2.5-flash", {"generateContentRequest": {"generationConfig": {}}})
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"


def test_an_unknown_model_is_not_found(emu: Emulator) -> None:
    client = make_client(emu.base_url)
    with pytest.raises(errors.ClientError) as caught:
        client.models.count_tokens(model="gemini-9-nonexistent", contents="hi")
    assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"
    client.close()
