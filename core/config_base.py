"""Shared machinery of the typed configuration (DESIGN decision 5).

Every setting is defined once, in a pydantic model, and read by three kinds of reader:
the SCP container (environment variables ``<PREFIX>_<FIELD>``), the Lambda handlers
(environment variables as well), and the Pulumi program / CLI (flat camelCase stack config
keys ``<group><Field>``). This module holds what those readers share: how names are derived,
how text values become lists, and how a validation failure becomes one clear message per
bad value in the reader's own vocabulary. It imports neither pulumi nor boto3.
"""

from __future__ import annotations

import difflib
import json
import typing
from collections.abc import Callable, Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """One or more configuration values are wrong; ``problems`` lists one line per value."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({source}):\n{lines}")


def env_name(prefix: str, field: str) -> str:
    """``("scp", "ae_title")`` -> ``SCP_AE_TITLE``."""
    return f"{prefix}_{field}".upper() if prefix else field.upper()


def camel_name(prefix: str, field: str) -> str:
    """``("scp", "ae_title")`` -> ``scpAeTitle`` (the Pulumi stack config key)."""
    words = ([prefix] if prefix else []) + field.split("_")
    head, *rest = [w for w in words if w]
    return head[0].lower() + head[1:] + "".join(w[:1].upper() + w[1:] for w in rest)


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_is_list(a) for a in typing.get_args(annotation) if a is not type(None))
    return False


def split_list(value: str) -> list[str]:
    """Environment and stack-config text lists are comma separated; blanks are dropped. A JSON
    array of strings (``'["10.0.0.0/8","192.168.0.0/16"]'``, how Pulumi users often write lists)
    is read as that list."""
    if value.lstrip().startswith("["):
        try:
            items = json.loads(value)
        except ValueError:
            items = None
        if isinstance(items, list) and all(isinstance(i, str) for i in items):
            return [item.strip() for item in items if item.strip()]
    return [item.strip() for item in value.split(",") if item.strip()]


class Settings(BaseModel):
    """Base of every settings group: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @classmethod
    def _coerce_text(cls, name: str, value: Any) -> Any:
        field = cls.model_fields[name]
        if isinstance(value, str) and _is_list(field.annotation):
            return split_list(value)
        if isinstance(value, str) and value == "" and not _is_list(field.annotation):
            return None if field.default is None else field.default
        return value

    @classmethod
    def build(cls, values: Mapping[str, Any], source: str, namer: Callable[[str], str]) -> Self:
        """Validate ``values`` (keyed by field name); errors name each key as ``namer`` spells it."""
        coerced = {k: cls._coerce_text(k, v) for k, v in values.items() if k in cls.model_fields}
        unknown = [k for k in values if k not in cls.model_fields]
        try:
            model = cls(**coerced)
        except ValidationError as exc:
            raise ConfigError(source, _problems(exc, values, namer)) from None
        if unknown:
            raise ConfigError(source, [f"{namer(k)}: unknown setting" for k in unknown])
        return model

    @classmethod
    def from_env(cls, environ: Mapping[str, str], prefix: str, *, strict: bool = False) -> Self:
        """Read ``<PREFIX>_<FIELD>`` variables; unset ones take the model's defaults.

        ``strict``: any other ``<PREFIX>_`` variable is an error naming the nearest setting, so a
        typo (``SCP_AE_TITEL``) stops the process instead of silently leaving the default.
        """
        known = {env_name(prefix, name): name for name in cls.model_fields}
        if strict:
            marker = env_name(prefix, "")
            unknown = sorted(k for k in environ if k.startswith(marker) and k not in known)
            if unknown:
                raise ConfigError("environment", [_unknown_variable(k, known) for k in unknown])
        values = {name: environ[variable] for variable, name in known.items() if variable in environ}
        return cls.build(values, "environment", lambda f: env_name(prefix, f))

    def to_env(self, prefix: str) -> dict[str, str]:
        """The inverse of ``from_env``: what the Pulumi program puts in a container or function."""
        env: dict[str, str] = {}
        for name, value in self.model_dump(mode="json").items():
            if value is None:
                continue
            if isinstance(value, list):
                text = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            env[env_name(prefix, name)] = text
        return env


def _unknown_variable(variable: str, known: Mapping[str, str]) -> str:
    nearest = difflib.get_close_matches(variable, list(known), n=1, cutoff=0.6)
    hint = f"; did you mean {nearest[0]}?" if nearest else "; see docs/scp.md for the settings"
    return f"{variable}: unknown setting{hint}"


def _problems(exc: ValidationError, values: Mapping[str, Any], namer: Callable[[str], str]) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        field = loc[0] if loc else ""
        name = namer(field) if field else "(settings)"
        got = values.get(field, "<unset>") if field else ""
        got_text = f" (got {got!r})" if field else ""
        message = err["msg"].removeprefix("Value error, ")
        if isinstance(got, str) and got.lstrip().startswith("["):
            got_text += '; a list is comma-separated (a,b) or a JSON array of strings (["a","b"])'
        problems.append(f"{name}: {message}{got_text}")
    return problems
