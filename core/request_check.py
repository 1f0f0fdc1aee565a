"""Checks batch request bodies against the API's request schema, built from the google-genai SDK's own types.

Embedding requests (`content`, for embeddings batch jobs) are checked against `EmbedRequestBody` instead.

The SDK has pydantic models (camelCase aliases, unknown fields forbidden) for every part of a request: Content,
Part, GenerationConfig, Tool, SafetySetting, ... but none for the REST body itself, because its
`GenerateContentConfig` flattens the body and the generation config into one object. `RequestBody` puts the
SDK's types back where the REST body has them (the SDK's converter `_GenerateContentConfig_to_mldev` is the
reference; a test holds the two together). `check_request(request)` finds the problems and, where there is one
obvious correct form (a name, a nesting), the rewritten request.
"""

from __future__ import annotations

import difflib
import enum
import re
import types as pytypes
import typing
import warnings
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import pydantic
from google.genai import _common, types

from .input_scan import json_type, request_kind

Severity = Literal["error", "warning"]


class GenerationConfigBody(types.GenerationConfig):
    """The REST `generationConfig`: the SDK's GenerationConfig, plus `imageConfig`, which the SDK sends there."""

    image_config: types.ImageConfig | None = None


class RequestBody(_common.BaseModel):
    """The REST `GenerateContentRequest` of one batch line, from the SDK's types (aliases are camelCase)."""

    model: str | None = None
    contents: list[types.Content] | None = None
    system_instruction: types.Content | None = None
    tools: list[types.Tool] | None = None
    tool_config: types.ToolConfig | None = None
    safety_settings: list[types.SafetySetting] | None = None
    generation_config: GenerationConfigBody | None = None
    cached_content: str | None = None
    labels: dict[str, str] | None = None
    service_tier: types.ServiceTier | None = None
    store: bool | None = None
    continuation_token: str | None = None


class EmbedRequestBody(_common.BaseModel):
    """The REST `EmbedContentRequest` of one embeddings batch line (`{"key", "request": {"content": ...}}`), from
    the SDK's types: the fields its converters send for the Gemini API (`_EmbedContentBatch_to_mldev` and
    `_EmbedContentConfig_to_mldev`; the Vertex-only settings raise there)."""

    model: str | None = None
    content: types.Content | None = None
    task_type: str | None = None
    title: str | None = None
    output_dimensionality: int | None = None


@dataclass(frozen=True)
class RequestProblem:
    """One thing wrong with a request: where (a dotted path), what, and the fix."""

    where: str
    message: str
    fix: str
    severity: Severity = "error"
    fixable: bool = False  # `check_request` rewrote it in `CheckedRequest.fixed`

    def __str__(self) -> str:
        return f"{self.where}: {self.message}; fix: {self.fix}"


@dataclass
class CheckedRequest:
    """The problems of one request, and the request rewritten where a fix has one obvious form (else None)."""

    problems: list[RequestProblem] = field(default_factory=list)
    fixed: dict[str, Any] | None = None

    @property
    def errors(self) -> list[RequestProblem]:
        return [p for p in self.problems if p.severity == "error"]


# --- what the SDK's models tell us ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    name: str  # the SDK's (snake_case) name
    alias: str  # the API's (camelCase) name
    annotation: Any


def _folded(name: str) -> str:
    return name.replace("_", "").casefold()


@cache
def _fields(model: type[pydantic.BaseModel]) -> dict[str, _Field]:
    """A model's fields by API name, SDK name and folded name (case and underscores ignored)."""
    found: dict[str, _Field] = {}
    for name, info in model.model_fields.items():
        item = _Field(name, info.alias or name, info.annotation)
        found[_folded(item.alias)] = item
    for item in list(found.values()):
        found[item.alias] = found[item.name] = item
    return found


def _lookup(model: type[pydantic.BaseModel], key: str) -> _Field | None:
    table = _fields(model)
    return table.get(key) or table.get(_folded(key))


_BODY = RequestBody
_GEN = GenerationConfigBody
_EMBED = EmbedRequestBody


def _models_in(annotation: Any) -> tuple[str, type[pydantic.BaseModel] | None]:
    """How a value of `annotation` nests models: ("model"|"list"|"map", the model) or ("", None)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, pytypes.UnionType):
        found = [_models_in(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
        found = [item for item in found if item[1] is not None]
        return found[0] if len(found) == 1 else ("", None)
    if origin is list:
        args = typing.get_args(annotation)
        inner = _models_in(args[0]) if args else ("", None)
        return ("list", inner[1]) if inner[0] == "model" else ("", None)
    if origin is dict:
        args = typing.get_args(annotation)
        inner = _models_in(args[1]) if len(args) == 2 else ("", None)
        return ("map", inner[1]) if inner[0] == "model" else ("", None)
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return "model", annotation
    return "", None


# --- the check -----------------------------------------------------------------------------------------------


def check_request(request: dict[str, Any], where: str = "request", quick: bool = True,
                  errors_only: bool = False) -> CheckedRequest:
    """The problems of one request body (the `request` object of a batch line), and its fixed form if any.

    `quick=False` skips the fast path (`is_plainly_valid`) and always validates with the SDK's models.
    `errors_only=True` lets the fast path take the SDK's snake_case names too (their warnings are not wanted),
    so a file written with them costs no more to check than one with the API's names.
    """
    if request_kind(request) == "embed":
        return check_embed_request(request, where, quick, errors_only)
    result = CheckedRequest()
    if quick and is_plainly_valid(request, sdk_names=errors_only):
        return result
    fixed = _Rewrite(result.problems, request).body(where)
    if "contents" not in fixed:  # the rewrite gave every known field its API name
        result.problems.append(RequestProblem(where, "no `contents`: the request has nothing to send",
                                              'add "contents": [{"role": "user", "parts": [{"text": "..."}]}]'))
    _type_errors(fixed, where, result.problems)
    if any(p.fixable for p in result.problems):
        result.fixed = fixed
    return result


def check_embed_request(request: dict[str, Any], where: str = "request", quick: bool = True,
                        errors_only: bool = False) -> CheckedRequest:
    """The problems of one embedding request body (an EmbedContentRequest), and its fixed form if any: the SDK's
    snake_case names renamed, a plain-string `content` wrapped as a Content."""
    result = CheckedRequest()
    content = request.get("content")
    if quick and type(content) is dict and _plain(_EMBED, request, errors_only):
        return result
    fixed = _Rewrite(result.problems, request).fields(_EMBED, request, where)
    if "content" not in fixed:
        result.problems.append(RequestProblem(where, "no `content`: the embedding request has nothing to embed",
                                              'add "content": {"parts": [{"text": "..."}]}'))
    _type_errors(fixed, where, result.problems, _EMBED)
    if any(p.fixable for p in result.problems):
        result.fixed = fixed
    return result


# --- the fast path: most lines are plain text requests with API names; no need to build pydantic objects ----

_Plan = dict[str, tuple[str, Any, str]]  # name -> (kind, what the kind needs, the API name)


def is_plainly_valid(request: dict[str, Any], sdk_names: bool = False) -> bool:
    """True when every field of `request` has its API name (or, with `sdk_names`, the SDK's snake_case name) and
    a value of the SDK model's type, checked without pydantic (about 20x quicker); False means "look closer",
    not "wrong"."""
    contents = request.get("contents")
    return type(contents) is list and bool(contents) and _plain(_BODY, request, sdk_names)


def _plain(model: type[pydantic.BaseModel], obj: dict[str, Any], sdk_names: bool) -> bool:
    plan = _plan(model, sdk_names)
    for key, value in obj.items():
        spec = plan.get(key)
        if spec is None:
            return False
        kind, what, name = spec
        if name != key and name in obj:  # the same field under both names
            return False
        if value is None:
            continue
        if kind == "scalar":
            if type(value) not in what:
                return False
        elif kind == "model":
            if type(value) is not dict or not _plain(what, value, sdk_names):
                return False
        elif kind == "list":
            if type(value) is not list:
                return False
            for element in value:
                if type(element) is not dict or not _plain(what, element, sdk_names):
                    return False
        elif kind == "enum":
            if type(value) is not str or value not in what:
                return False
        elif kind == "scalars":
            if type(value) is not list or any(type(element) not in what for element in value):
                return False
        elif kind == "enums":
            if type(value) is not list or any(type(element) is not str or element not in what for element in value):
                return False
        elif kind == "map":
            if type(value) is not dict:
                return False
            for element in value.values():
                if type(element) is not dict or not _plain(what, element, sdk_names):
                    return False
        elif kind == "dict":
            if type(value) is not dict:
                return False
        elif kind != "any":
            return False
    return True


_SCALARS: dict[Any, tuple[type, ...]] = {str: (str,), int: (int,), float: (int, float), bool: (bool,), bytes: (str,)}


@cache
def _plan(model: type[pydantic.BaseModel], sdk_names: bool = False) -> _Plan:
    """How the fast path checks each field of `model`, by API name (and SDK name), from the model's annotations."""
    plan: _Plan = {}
    for name, info in model.model_fields.items():
        alias = info.alias or name
        plan[alias] = (*_plan_of(info.annotation), alias)
        if sdk_names:
            plan[name] = plan[alias]
    return plan


def _plan_of(annotation: Any) -> tuple[str, Any]:
    if annotation is Any:
        return "any", None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, pytypes.UnionType):
        rest = [arg for arg in args if arg is not type(None)]
        return _plan_of(rest[0]) if len(rest) == 1 else ("slow", None)
    if origin is list and args:
        inner = _plan_of(args[0])
        listed = {"model": "list", "scalar": "scalars", "enum": "enums"}.get(inner[0])
        return (listed, inner[1]) if listed else ("slow", None)
    if origin is dict and len(args) == 2:
        inner = _plan_of(args[1])
        return {"any": ("dict", None), "model": ("map", inner[1])}.get(inner[0], ("slow", None))
    if annotation in _SCALARS:
        return "scalar", _SCALARS[annotation]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "enum", frozenset(member.value for member in annotation)
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return "model", annotation
    return "slow", None


_NOT_AN_ENUM_VALUE = re.compile(r"^(?P<value>.*) is not a valid (?P<enum>\w+)$")


def _type_errors(body: dict[str, Any], where: str, problems: list[RequestProblem],
                 model: type[pydantic.BaseModel] = _BODY) -> None:
    try:
        # The SDK's enums accept an unknown value with a warning (forward compatibility); the API refuses it.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.model_validate(body)
        for warning in caught:
            match = _NOT_AN_ENUM_VALUE.match(str(warning.message))
            kind = getattr(types, match["enum"], None) if match else None
            if match and isinstance(kind, type) and issubclass(kind, enum.Enum):
                names = [member.value for member in kind if not member.value.endswith("_UNSPECIFIED")]
                shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                problems.append(RequestProblem(_path_of(body, match["value"], where) or where,
                                               f"`{match['value']}` is not a {match['enum']} the API knows",
                                               f"use one of {shown}"))
    except pydantic.ValidationError as exc:
        for error in exc.errors(include_url=False):
            if error["type"] == "extra_forbidden":
                continue  # reported by the rewrite, with a suggestion
            path = where + "".join(f"[{part}]" if isinstance(part, int) else f".{part}"
                                   for part in error["loc"] if not _is_union_tag(part))
            problems.append(RequestProblem(path, f"{error['msg']} (got {json_type(error['input'])})",
                                           f"give {_expected(error['type'])}"))
    else:
        contents = body.get("contents")
        if model is _BODY and isinstance(contents, list) and not contents:
            problems.append(RequestProblem(f"{where}.contents", "empty: the request has nothing to send",
                                           'give at least one {"role": "user", "parts": [{"text": "..."}]}'))


def _path_of(value: Any, wanted: str, where: str) -> str | None:
    """The path of the first string `wanted` inside `value`."""
    if value == wanted:
        return where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _path_of(item, wanted, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}")
        if found:
            return found
    return None


_EXPECTED = {"int": "a whole number", "float": "a number", "string": "a string", "bool": "true or false",
             "list": "a JSON array", "dict": "a JSON object", "model": "a JSON object", "bytes": "base64 text",
             "enum": "one of the values named"}


def _expected(error_type: str) -> str:
    """What a pydantic error type asks for, in JSON words."""
    return _EXPECTED.get(error_type.split("_")[0], "the type the API reference names for this field")


def _is_union_tag(part: object) -> bool:
    # pydantic names the union member it tried (e.g. "list[Content]"); not a field of the request
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool"))


class _Rewrite:
    """One pass over a request: names to the API's, misplaced fields moved, every problem recorded."""

    def __init__(self, problems: list[RequestProblem], request: dict[str, Any]) -> None:
        self.problems = problems
        self.request = request
        self.lifted: dict[str, Any] = {}  # top-of-request fields found inside generationConfig
        self.reported: set[str] = set()  # paths whose problem is noted already

    def note(self, where: str, message: str, fix: str, severity: Severity = "error", fixable: bool = False) -> None:
        self.problems.append(RequestProblem(where, message, fix, severity, fixable))

    def body(self, where: str) -> dict[str, Any]:
        request = self.request
        moved_gen: dict[str, Any] = {}
        shaped: dict[str, Any] = {}  # fields moved to where the API has them, under their API names
        for key, value in request.items():
            if (key == "config" and isinstance(value, dict) and _lookup(_BODY, key) is None
                    and self._split_config(value, f"{where}.config", moved_gen, shaped)):
                continue
            item = _lookup(_BODY, key)
            gen_item = _lookup(_GEN, key) if item is None else None
            if gen_item is not None and not _has_field(request.get(_gen_key(request) or ""), gen_item):
                self.note(f"{where}.{key}", f"`{key}` is a generation setting; the API expects it inside "
                          "`generationConfig`, not at the top of the request",
                          f'move it into "generationConfig" as "{gen_item.alias}"', fixable=True)
                moved_gen[gen_item.alias] = value
                continue
            shaped[key] = value
        if moved_gen:
            gen_key = _gen_key(shaped) or "generationConfig"
            gen = shaped.get(gen_key)
            shaped[gen_key] = {**gen, **moved_gen} if isinstance(gen, dict) else moved_gen
        out = self.fields(_BODY, shaped, where)
        for key, value in self.lifted.items():
            out.setdefault(key, value)
        return out

    def _split_config(self, config: dict[str, Any], where: str, moved_gen: dict[str, Any],
                      top: dict[str, Any]) -> bool:
        """`config` is the SDK's parameter, not an API field: spread it where the API has each part."""
        request = self.request
        places: dict[str, tuple[str, str]] = {}
        for key in config:
            top_item, gen_item = _lookup(_BODY, key), _lookup(_GEN, key)
            if top_item is not None and top_item.alias not in ("contents", "generationConfig", "model"):
                places[key] = ("top", top_item.alias)
            elif gen_item is not None:
                places[key] = ("gen", gen_item.alias)
        homeless = [key for key in config if key not in places]
        clash = [alias for place, alias in places.values()
                 if place == "top" and any(_lookup(_BODY, k) is _lookup(_BODY, alias) for k in request)]
        if homeless or clash or _gen_key(request) is not None:
            why = (f"the SDK's own settings {', '.join(map(repr, homeless))} have no place in the API request"
                   if homeless else "the request already has some of its fields")
            self.note(where, "`config` is the SDK's parameter, not a field of the API request",
                      f"spread it: generation settings into \"generationConfig\", systemInstruction, tools, "
                      f"toolConfig, safetySettings and cachedContent at the top of the request ({why})")
            self.reported.add(where)
            return False
        self.note(where, "`config` is the SDK's parameter, not a field of the API request",
                  "spread it: generation settings into \"generationConfig\", the others at the top of the request",
                  fixable=True)
        for key, (place, alias) in places.items():
            (moved_gen if place == "gen" else top)[alias] = config[key]
        return True

    def fields(self, model: type[pydantic.BaseModel], obj: dict[str, Any], where: str) -> dict[str, Any]:
        """`obj` with each field checked against `model` (recursively); renames and moves applied."""
        out: dict[str, Any] = {}
        for key, value in obj.items():
            path = f"{where}.{key}"
            item = _lookup(model, key)
            if item is None:
                if model is _GEN and self._lift(key, value, path):
                    continue
                if path not in self.reported:
                    self._unknown(model, key, path)
                out[key] = value
                continue
            name = item.alias
            if key != name:
                if any(k != key and _lookup(model, k) is item for k in obj):
                    self.note(path, f"`{key}` and `{name}` are the same field given twice",
                              f"keep one of them, named `{name}`")
                    out[key] = value
                    continue
                if key == item.name:
                    self.note(path, f"`{key}` is the SDK's name; the API expects `{name}`",
                              f'rename it to "{name}"', severity="warning", fixable=True)
                else:
                    self.note(path, f"`{key}` is not a field name the API knows; it expects `{name}`",
                              f'rename it to "{name}"', fixable=True)
            out[name] = self.value(item, value, f"{where}.{name}")
        return out

    def _lift(self, key: str, value: Any, path: str) -> bool:
        """A top-of-request field (systemInstruction, tools, ...) inside generationConfig: move it up."""
        item = _lookup(_BODY, key)
        if item is None or item.alias in ("generationConfig", "contents", "model"):
            return False
        if any(_lookup(_BODY, k) is item for k in self.request) or item.alias in self.lifted:
            self.note(path, f"`{key}` belongs at the top of the request, not inside `generationConfig`, and the "
                      f"request has `{item.alias}` there already", "keep one of the two")
            return False
        self.note(path, f"`{key}` belongs at the top of the request, not inside `generationConfig`",
                  f'move it out of "generationConfig" to the request as "{item.alias}"', fixable=True)
        self.lifted[item.alias] = self.value(item, value, path.rsplit(".", 2)[0] + f".{item.alias}")
        return True

    def _unknown(self, model: type[pydantic.BaseModel], key: str, path: str) -> None:
        names = sorted({item.alias for item in _fields(model).values()})
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.7)
        hint = f'did you mean "{close[0]}"?' if close else f"the fields here are: {', '.join(names)}"
        where = "of the request" if model in (_BODY, _EMBED) else f"of {model.__name__}"
        self.note(path, f"`{key}` is not a field {where}; the API refuses the whole request", hint)

    def value(self, item: _Field, value: Any, where: str) -> Any:
        kind, model = _models_in(item.annotation)
        if model is None:
            return value
        if kind == "list":
            if isinstance(value, dict) or (model in (types.Content, types.Part) and isinstance(value, str)):
                shape = "a string" if isinstance(value, str) else "one object"
                self.note(where, f"`{item.alias}` must be a list of {model.__name__} objects, got {shape}",
                          f"make it a list: {_example(model, value)}", fixable=True)
                if isinstance(value, str):
                    value = {"role": "user", "parts": [{"text": value}]} if model is types.Content else {"text": value}
                value = [value]
            if isinstance(value, list):
                return [self.element(model, element, f"{where}[{index}]") for index, element in enumerate(value)]
            return value
        if kind == "map":
            if isinstance(value, dict):
                return {k: self.element(model, v, f"{where}.{k}") for k, v in value.items()}
            return value
        return self.element(model, value, where)

    def element(self, model: type[pydantic.BaseModel], value: Any, where: str) -> Any:
        if isinstance(value, str) and model in (types.Content, types.Part):
            self.note(where, f"a plain string where the API expects a {model.__name__} object",
                      f"wrap it: {_example(model, value, listed=False)}", fixable=True)
            return _wrap(model, value)
        if isinstance(value, dict):
            return self.fields(model, value, where)
        return value


def _gen_key(request: Any) -> str | None:
    if not isinstance(request, dict):
        return None
    for key in request:
        if _lookup(_BODY, key) is _fields(_BODY)["generation_config"]:
            return key
    return None


def _has_field(obj: Any, item: _Field) -> bool:
    return isinstance(obj, dict) and any(_lookup(_GEN, key) is item for key in obj)


def _wrap(model: type[pydantic.BaseModel], text: str) -> dict[str, Any]:
    if model is types.Part:
        return {"text": text}
    return {"parts": [{"text": text}]}


def _example(model: type[pydantic.BaseModel], value: Any, listed: bool = True) -> str:
    if not isinstance(value, str):
        return "[{...}]"
    if model is types.Part:
        inner = '{"text": "..."}'
    else:
        inner = '{"role": "user", "parts": [{"text": "..."}]}' if listed else '{"parts": [{"text": "..."}]}'
    return f"[{inner}]" if listed else inner
