"""The ``medical-imaging`` REST-JSON API, read from botocore's service model at run time.

Everything protocol-shaped is derived here from the model, never written by hand, so the emulator
cannot drift from the API boto3 speaks: each operation's HTTP method and URI template, where each
input member travels (uri / querystring / header / body / payload), the constraints of every shape
(required, pattern, enum, min/max length, min/max value, union) and how outputs are laid out.

botocore's own client-side validation checks required members, types and minimum lengths only;
the service checks the rest. ``validate`` does what the service does and words its messages like
AWS's validators (``1 validation error detected: Value 'x' at 'clientToken' failed to satisfy
constraint: Member must satisfy regular expression pattern: [A-Za-z0-9._-]+``). Patterns are
matched against the whole value, as AWS's validators do.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import unquote

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape

from local.ahi.errors import ApiError, ValidationError

SERVICE_NAME = "medical-imaging"
API_VERSION = "2023-07-19"
# Error codes of the protocol itself (not modelled as operation errors) and their HTTP status.
_PROTOCOL_ERRORS = {
    "SerializationException": 400,
    "UnknownOperationException": 404,
    "NotImplementedException": 501,
}


@cache
def load_service_model() -> ServiceModel:
    """botocore's model of ``medical-imaging`` (loaded once, on first use)."""
    model = botocore.session.get_session().get_service_model(SERVICE_NAME)
    if model.api_version != API_VERSION:
        raise RuntimeError(f"expected {SERVICE_NAME} API {API_VERSION}, botocore has {model.api_version}")
    return model


@dataclass(frozen=True)
class Route:
    """One operation's HTTP method and URI template, compiled to a regular expression."""

    operation: OperationModel
    method: str
    regex: re.Pattern[str]
    literal_chars: int  # more literal text = more specific template

    @classmethod
    def of(cls, operation: OperationModel) -> Route:
        template = operation.http["requestUri"].split("?", 1)[0]
        parts: list[str] = []
        literal = 0
        for token in re.split(r"(\{[^}]+\})", template):
            if token.startswith("{"):
                name = token[1:-1]
                greedy = name.endswith("+")
                parts.append(f"(?P<{name.rstrip('+')}>{'.+' if greedy else '[^/]+'})")
            else:
                parts.append(re.escape(token))
                literal += len(token)
        return cls(operation, operation.http["method"], re.compile("".join(parts)), literal)


class ApiModel:
    """Routing, request parsing, validation and response rendering for one service model."""

    def __init__(self, service: ServiceModel | None = None):
        self.service = service or load_service_model()
        routes = (Route.of(self.service.operation_model(n)) for n in self.service.operation_names)
        self.routes = sorted(routes, key=lambda r: -r.literal_chars)

    # --- requests -------------------------------------------------------------------------
    def resolve(self, method: str, path: str) -> tuple[OperationModel, dict[str, str]]:
        """``("GET", "/datastore/abc")`` -> (GetDatastore, {"datastoreId": "abc"})."""
        for route in self.routes:
            match = route.regex.fullmatch(path)
            if match and route.method == method:
                return route.operation, {k: unquote(v) for k, v in match.groupdict().items()}
        raise ApiError(f"No operation matches {method} {path}", code="UnknownOperationException")

    def parse(
        self,
        operation: OperationModel,
        uri_params: dict[str, str],
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> dict[str, Any]:
        """Collect the input members from where the model says they travel."""
        shape = operation.input_shape
        if shape is None:
            return {}
        params: dict[str, Any] = {}
        payload = shape.serialization.get("payload")
        document: dict[str, Any] | None = None
        lower_headers = {k.lower(): v for k, v in headers.items()}
        for name, member in shape.members.items():
            location = member.serialization.get("location")
            wire = member.serialization.get("name", name)
            if location == "uri":
                if wire in uri_params:
                    params[name] = uri_params[wire]
            elif location == "querystring":
                if wire in query:
                    params[name] = _from_text(member, query[wire], name)
            elif location == "header":
                if wire.lower() in lower_headers:
                    params[name] = _from_text(member, [lower_headers[wire.lower()]], name)
            elif name == payload:
                if member.type_name == "blob":
                    params[name] = body
                elif (payload_doc := _json_object(body)) is not None:
                    params[name] = _from_json(member, payload_doc)
            else:
                if document is None:
                    document = _json_object(body) or {}
                if name in document:
                    params[name] = _from_json(member, document[name])
        return params

    def validate(self, operation: OperationModel, params: dict[str, Any]) -> None:
        """Raise ``ValidationException`` listing every constraint the request violates."""
        if operation.input_shape is None:
            return
        problems: list[str] = []
        _check(operation.input_shape, params, "", problems)
        if problems:
            count = len(problems)
            raise ValidationError(
                f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(problems)
            )

    # --- responses ------------------------------------------------------------------------
    def render(self, operation: OperationModel, result: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        """Lay an output dict out as the model says: (status, headers, body).

        The output is checked against the model first: an emulator answer that a real client
        could not trust is an emulator bug, reported loudly as ``InternalServerException``.
        """
        shape = operation.output_shape
        status = int(operation.http.get("responseCode", 200))
        if shape is None:
            return status, {"Content-Type": "application/json"}, b"{}"
        problems: list[str] = []
        _check(shape, result, "", problems)
        if problems:
            raise ApiError(f"emulator produced an invalid {operation.name} response: {'; '.join(problems)}")
        headers: dict[str, str] = {}
        payload = shape.serialization.get("payload")
        document: dict[str, Any] = {}
        for name, member in shape.members.items():
            value = result.get(name)
            if value is None or name == payload:
                continue
            if member.serialization.get("location") == "header":
                headers[member.serialization.get("name", name)] = str(value)
            else:
                document[name] = _to_json(member, value)
        if payload and shape.members[payload].type_name == "blob":
            headers.setdefault("Content-Type", "application/octet-stream")
            return status, headers, bytes(result[payload])
        if payload:
            document = _to_json(shape.members[payload], result.get(payload) or {})
        headers.setdefault("Content-Type", "application/json")
        return status, headers, json.dumps(document).encode()

    def error_status(self, code: str) -> int:
        """The HTTP status the model gives an error code (429 for ThrottlingException, ...)."""
        if code in self.service.shape_names:
            error = self.service.shape_for(code).metadata.get("error", {})
            return int(error.get("httpStatusCode", 400))
        return _PROTOCOL_ERRORS.get(code, 500)


# --- wire format -> Python ------------------------------------------------------------------
def _json_object(body: bytes) -> dict[str, Any] | None:
    if not body.strip():
        return None
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise ApiError("Request body is not valid JSON", code="SerializationException") from exc
    if not isinstance(document, dict):
        raise ApiError("Request body must be a JSON object", code="SerializationException")
    return document


def _from_text(shape: Shape, values: list[str], name: str) -> Any:
    """A querystring or header value, typed by its shape."""
    if shape.type_name == "list":
        return [_from_text(shape.member, [v], name) for v in values]
    text = values[0]
    if shape.type_name in ("integer", "long"):
        try:
            return int(text)
        except ValueError:
            raise ValidationError(
                f"1 validation error detected: Value '{text}' at '{name}' failed to satisfy "
                "constraint: Member must be an integer"
            ) from None
    if shape.type_name == "boolean":
        return text.lower() == "true"
    if shape.type_name == "timestamp":
        return _parse_timestamp(text)
    return text


def _from_json(shape: Shape, value: Any) -> Any:
    """A JSON body value, typed by its shape (timestamps arrive as epoch seconds)."""
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        return {k: _from_json(shape.members[k], v) for k, v in value.items() if k in shape.members}
    if kind == "list" and isinstance(value, list):
        return [_from_json(shape.member, v) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: _from_json(shape.value, v) for k, v in value.items()}
    if kind == "timestamp":
        return _parse_timestamp(value)
    return value


def _parse_timestamp(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    return value


# --- Python -> wire format ------------------------------------------------------------------
def _to_json(shape: Shape, value: Any) -> Any:
    kind = shape.type_name
    if kind == "structure":
        return {k: _to_json(m, value[k]) for k, m in shape.members.items() if value.get(k) is not None}
    if kind == "list":
        return [_to_json(shape.member, v) for v in value]
    if kind == "map":
        return {k: _to_json(shape.value, v) for k, v in value.items()}
    if kind == "timestamp":
        return value.timestamp()
    if kind == "blob":
        return base64.b64encode(value).decode()
    return value


# --- constraints ----------------------------------------------------------------------------
@cache
def _pattern(text: str) -> re.Pattern[str]:
    """Model patterns are Java regexes; ``\\p{ASCII}`` is the only construct Python lacks here."""
    return re.compile(text.replace(r"\p{ASCII}", r"[\x00-\x7F]"), re.DOTALL)


def _at(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _violation(value: Any, path: str, constraint: str) -> str:
    shown = (
        "Value null"
        if value is None
        else f"Value '{value}'"
        if isinstance(value, str | int | float)
        else "Value"
    )
    return f"{shown} at '{path}' failed to satisfy constraint: {constraint}"


def _bounds(shape: Shape, size: int | float, value: Any, path: str, what: str, problems: list[str]) -> None:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and size < low:
        problems.append(_violation(value, path, f"Member must have {what} greater than or equal to {low}"))
    if high is not None and size > high:
        problems.append(_violation(value, path, f"Member must have {what} less than or equal to {high}"))


def _check(shape: Shape, value: Any, path: str, problems: list[str]) -> None:
    """Append one message per constraint ``value`` (at ``path``) violates; one branch per shape type."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            problems.append(_violation(value, path, "Member must be a structure"))
            return
        for required in shape.required_members:
            if value.get(required) is None:
                problems.append(_violation(None, _at(path, required), "Member must not be null"))
        present = [k for k, v in value.items() if v is not None and k in shape.members]
        if shape.metadata.get("union") and len(present) != 1:
            problems.append(_violation(value, path, "Member must have exactly one member set"))
        for name in present:
            _check(shape.members[name], value[name], _at(path, name), problems)
    elif kind == "list":
        if not isinstance(value, list):
            problems.append(_violation(value, path, "Member must be a list"))
            return
        _bounds(shape, len(value), None, path, "length", problems)
        for index, item in enumerate(value, start=1):
            _check(shape.member, item, f"{path}.{index}.member", problems)
    elif kind == "map":
        if not isinstance(value, dict):
            problems.append(_violation(value, path, "Member must be a map"))
            return
        _bounds(shape, len(value), None, path, "length", problems)
        for key, item in value.items():
            _check(shape.key, key, f"{path}.key", problems)
            _check(shape.value, item, f"{path}.{key}", problems)
    elif kind == "string":
        if not isinstance(value, str):
            problems.append(_violation(value, path, "Member must be a string"))
            return
        if shape.enum and value not in shape.enum:
            problems.append(
                _violation(value, path, f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
            )
        _bounds(shape, len(value), value, path, "length", problems)
        pattern = shape.metadata.get("pattern")
        if pattern and not _pattern(pattern).fullmatch(value):
            problems.append(
                _violation(value, path, f"Member must satisfy regular expression pattern: {pattern}")
            )
    elif kind in ("integer", "long", "float", "double"):
        integral = kind in ("integer", "long")
        if isinstance(value, bool) or not isinstance(value, int if integral else int | float):
            problems.append(
                _violation(value, path, f"Member must be {'an integer' if integral else 'a number'}")
            )
            return
        _bounds(shape, value, value, path, "value", problems)
    elif kind == "boolean" and not isinstance(value, bool):
        problems.append(_violation(value, path, "Member must be a boolean"))
    elif kind == "timestamp" and not isinstance(value, datetime):
        problems.append(_violation(value, path, "Member must be a timestamp"))
