"""Config dataclasses validated by pydantic, and the YAML that fills them.

A config section is a ``@config_dataclass``: a standard dataclass (``dataclasses.fields``,
``asdict``, ``replace``, attribute access and assignment all work) whose fields pydantic
checks when an instance is made: types (``"1e-5"`` -> 1e-05), ranges
(``Annotated[int, Field(ge=1)]``, or the aliases below), enums (``Literal[...]``), unknown
keys, and the section's own cross-field rules (a ``model_validator``). Each field's trailing
comment is its documentation.

Why pydantic: it checks a whole tree at once and reports every problem with its location,
which is what the messages below are made of; it is the most used validation library of
Python, and its dataclasses stay dataclasses. OmegaConf's structured configs were measured
and rejected: a ``str`` field set to ``no`` became ``'False'`` and a YAML syntax error still
escaped as a raw ParserError.

Why our own YAML reading (:func:`read_yaml`): YAML 1.1 guesses a plain scalar's type
(``no`` -> False, ``1e-5`` -> a string, ``0755`` -> 493), then the schema would have to
undo the guess. Here every plain scalar stays a string except ``null``/``~``/empty (None),
and pydantic turns the string into the field's type (``no`` stays ``"no"`` for a string
field and is False for a boolean one). Quoted scalars are always strings.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as _pydantic_dataclass

from mcm.errors import ConfigError

T = TypeVar("T")

# Unknown keys are errors; nan and inf are never a sensible setting.
CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


def config_dataclass(cls=None, /, **kwargs):
    """``@dataclass`` for config sections: validated by pydantic when built (module docstring)."""

    def wrap(c):
        return _pydantic_dataclass(c, config=CONFIG, **kwargs)

    return wrap if cls is None else wrap(cls)


# Ranges used all over the configs.
PositiveInt = Annotated[int, Field(ge=1)]  # counts, step numbers: >= 1
NonNegativeInt = Annotated[int, Field(ge=0)]  # intervals where 0 means "off", seeds
PositiveFloat = Annotated[float, Field(gt=0)]  # rates, scales, timeouts
NonNegativeFloat = Annotated[float, Field(ge=0)]  # weights, where 0 means "off"
Fraction = Annotated[float, Field(ge=0, le=1)]  # probabilities, EMA decays
Betas = Annotated[
    list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=2, max_length=2)
]  # Adam's (beta1, beta2)


# ------------------------------------------------------------------ YAML
class _Loader(yaml.SafeLoader):
    """Plain scalars stay strings except null (the schema types them); duplicate keys are
    errors (YAML would silently keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                key_node, yaml.ScalarNode
            ):
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key_node.value!r} appears twice", key_node.start_mark
                )
            seen.add(key_node.value)
        return super().construct_mapping(node, deep)


_KEEP = ("tag:yaml.org,2002:null", "tag:yaml.org,2002:merge")
_Loader.yaml_implicit_resolvers = {
    first: kept
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    if (kept := [(tag, regexp) for tag, regexp in resolvers if tag in _KEEP])
}


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def read_yaml(path: str | Path) -> Any:
    """A YAML file as nested dicts/lists of strings and None (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Config file {str(path)!r} does not exist; pass an existing YAML file."
        )
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(e)}); fix the file.") from e


def parse_value(raw: str, key: str) -> Any:
    """The value of a ``--set key=value`` override, read as :func:`read_yaml` reads a value:
    ``no`` -> "no", ``[1, 2]`` -> ["1", "2"], ``null`` -> None, empty -> ""."""
    if not raw.strip():
        return ""
    try:
        return yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError as e:
        raise ConfigError(
            f"{key}: {raw!r} is not valid YAML ({_yaml_problem(e)}); write a plain value "
            f"(e.g. {key}=1e-5), a list such as [1, 2], or quote it."
        ) from e


# ------------------------------------------------------------------ validation
def from_dict(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build config dataclass ``cls`` from (nested) dicts; every problem of the whole tree is
    reported in one :class:`ConfigError`, a line per problem naming the dotted key."""
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as e:
        raise ConfigError(format_errors(cls, e, prefix)) from None


def _config_class(tp) -> type | None:
    """The config dataclass that a field's type holds (``X``, ``X | None``), if any."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if (found := _config_class(arg)) is not None:
            return found
    return None


def _walk(cls, loc: tuple, prefix: str) -> tuple[str, type | None, str | None, str | None]:
    """pydantic's error location -> (dotted key, the section class it ends in, the key of the
    union the error is in and the member pydantic tried there, e.g. "list[...]")."""
    key, node, union, member = prefix, cls, None, None
    for item in loc:
        if isinstance(item, int):
            key += f"[{item}]"
            continue
        names = {f.name for f in dataclasses.fields(node)} if node is not None else set()
        if item in names:
            key = f"{key}.{item}" if key else item
            node = _config_class(typing.get_type_hints(node)[item])
        elif union is None:  # a union's member: "constrained-int", "list[constrained-int]"
            union, member = key, str(item)
    return key, node, union, member


def _show(value) -> str:
    """A value as the user wrote it (YAML gives strings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value if value and value == value.strip() else repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _describe(err: dict) -> str:
    """One pydantic error as 'must be ...' (the key is added by the caller)."""
    kind, ctx = err["type"], err.get("ctx") or {}
    got = f", got {_show(err.get('input'))}"
    simple = {
        "int_parsing": "must be an integer",
        "int_type": "must be an integer",
        "int_from_float": "must be a whole number",
        "float_parsing": "must be a number",
        "float_type": "must be a number",
        "finite_number": "must be a finite number",
        "bool_parsing": "must be true or false",
        "bool_type": "must be true or false",
        "string_type": "must be a string (quote it)",
        "list_type": "must be a list such as [a, b]",
        "dataclass_type": "must be a section (a mapping of keys)",
        "dict_type": "must be a mapping",
    }
    if kind in simple:
        return simple[kind] + got
    bounds = {
        "greater_than_equal": ">=",
        "greater_than": ">",
        "less_than_equal": "<=",
        "less_than": "<",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {_show(limit)}{got}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}{got}"
    if kind in ("too_short", "too_long"):
        n = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        many = "at least" if kind == "too_short" else "at most"
        return f"must have {many} {n} item{'' if n == 1 else 's'}{got}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    return f"{err['msg']}{got}"


def _unknown_key(cls, err: dict, prefix: str) -> str:
    parent, node, _, _ = _walk(cls, err["loc"][:-1], prefix)
    name = str(err["loc"][-1])
    key = f"{parent}.{name}" if parent else name
    allowed = sorted(f.name for f in dataclasses.fields(node)) if node is not None else []
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" Did you mean {(f'{parent}.' if parent else '') + close[0]!r}?" if close else ""
    where = f"keys of {parent}" if parent else "top-level keys"
    return f"{key}: unknown key.{hint} The {where} are: {', '.join(allowed)}."


def format_errors(cls, error: ValidationError, prefix: str = "") -> str:
    """A line per problem: ``dotted.key: must be ..., got VALUE`` (the fix is in the words)."""
    lines: dict[str, None] = {}
    errors = []
    unions: dict[str, list] = {}  # a value that fits no member of a union: one error each
    for err in error.errors(include_url=False):
        if err["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            lines[_unknown_key(cls, err, prefix)] = None
            continue
        key, _, union, member = _walk(cls, err["loc"], prefix)
        errors.append((key, union, member, err))
        if union is not None:
            unions.setdefault(union, []).append((member, err))
    for union, tried in unions.items():
        # The value itself is the input of the errors at the union's own key; report only the
        # members of its shape (a list is not "must be an integer").
        value = next((e["input"] for m, e in tried if not m.startswith("list")), None)
        is_list = isinstance(value, list | tuple)
        unions[union] = [m for m, _ in tried if m.startswith("list") == is_list] or [
            m for m, _ in tried
        ]
    for key, union, member, err in errors:
        if union is not None and member not in unions[union]:
            continue
        text = _describe(err)
        lines[f"{key}: {text}" if key else text] = None
    return "\n".join(lines)


__all__ = [
    "CONFIG",
    "Betas",
    "ConfigError",
    "Fraction",
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "config_dataclass",
    "format_errors",
    "from_dict",
    "parse_value",
    "read_yaml",
]
