"""One validation mechanism for the topology config, the training presets and the bundle manifest.

Contract:

* ``@schema`` / ``@schema(extra="ignore")`` turns a class into a pydantic dataclass: afterwards a
  plain dataclass (attribute access and assignment, ``dataclasses.asdict``), validated when it is
  built from a parsed document by ``validate(cls, data, context=...)``. Unknown keys are errors
  unless ``extra="ignore"``.
* Field types keep the project's strictness: ``Int`` / ``PosInt`` / ``NonNegInt`` (never a bool,
  never a float), ``Float`` / ``PosFloat`` / ``NonNegFloat`` / ``Ratio`` (finite; ints accepted and
  converted, bools never), ``Bool``, ``Str``, ``NonEmptyStr``; ``one_of(choices)``,
  ``exactly(n, T)``, ``DbRange``; ranges with ``Field(ge=..., lt=...)``. Strings are never
  converted to numbers.
* Validators raise ``expected(...)`` / ``note(...)`` or collect several ``Problems`` (each at its
  own location); consistency checks see only the fields that validated.
* ``messages(exc, root)`` is the one translation of a ``ValidationError`` into the project's lines
  ``field.path: expected ..., got VALUE`` (``unknown key 'k' (known keys: ...), got VALUE``,
  ``required key is missing``); ``validate`` raises ``SchemaError`` carrying them.

Stdlib + pydantic only (no numpy, no torch).
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Annotated, Any, Iterable

import pydantic
from pydantic import AfterValidator, AllowInfNan, ConfigDict, Field, PlainValidator, Strict, TypeAdapter
from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = ["schema", "validate", "messages", "SchemaError", "Problems", "expected", "note", "show",
           "Int", "PosInt", "NonNegInt", "Float", "PosFloat", "NonNegFloat", "Ratio", "Bool", "Str",
           "NonEmptyStr", "one_of", "exactly", "DbRange", "Field", "ValidationError"]


# ----------------------------------------------------------------------------- schema classes

def _config(extra: str) -> ConfigDict:
    # Not pydantic's strict mode (a strict dataclass refuses a dict): strictness lives in the types.
    return ConfigDict(extra=extra, allow_inf_nan=False, validate_default=False)


def schema(cls: type | None = None, *, extra: str = "forbid"):
    """Class decorator: a pydantic dataclass with the project's config (unknown keys forbidden)."""
    def wrap(c: type) -> type:
        return pydantic.dataclasses.dataclass(c, config=_config(extra))
    return wrap if cls is None else wrap(cls)


class SchemaError(ValueError):
    """A document failed validation; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def validate(cls: type, data: Any, *, context: dict | None = None, table: str = "a table"):
    """``cls`` built from the parsed document ``data``; SchemaError with ``messages`` otherwise."""
    try:
        return _adapter(cls).validate_python(data, context=context)
    except ValidationError as exc:
        raise SchemaError(messages(exc, cls, table=table)) from None


# ----------------------------------------------------------------------------- errors

def expected(phrase: str) -> PydanticCustomError:
    """Raise in a validator: ``field: expected PHRASE, got VALUE``."""
    return PydanticCustomError("expected", "expected {phrase}", {"phrase": phrase})


def note(message: str) -> PydanticCustomError:
    """Raise in a validator: ``field: MESSAGE`` (the message names the value itself)."""
    return PydanticCustomError("note", "{message}", {"message": message})


class Problems:
    """Consistency problems found by one validator, each at a location relative to the value it
    validates (``("tasks", 1, "name")`` or ``"compact_dim"``); ``raise_if_any`` raises them together."""

    def __init__(self) -> None:
        self._errors: list[InitErrorDetails] = []

    def expected(self, loc: str | tuple, phrase: str, value: Any) -> None:
        self._add(loc, expected(phrase), value)

    def note(self, loc: str | tuple, message: str) -> None:
        self._add(loc, note(message), None)

    def _add(self, loc, error: PydanticCustomError, value: Any) -> None:
        self._errors.append(InitErrorDetails(type=error, loc=(loc,) if isinstance(loc, (str, int)) else tuple(loc),
                                             input=value))

    def __bool__(self) -> bool:
        return bool(self._errors)

    def raise_if_any(self) -> None:
        if self._errors:
            raise ValidationError.from_exception_data("problems", self._errors)


_MAX_SHOWN = 80


def show(value: Any) -> str:
    """The offending value as messages print it: repr, shortened when long."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN - 3] + "..."


def loc_path(loc: Iterable) -> str:
    """('transmitters', 1, 'fading') -> 'transmitters[1].fading'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_TABLE = object()  # placeholder for the caller's word for a mapping ("a table", "an object")
_PHRASES: dict[str, Any] = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a finite number", "float_parsing": "a finite number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "a string",
    "list_type": "a list", "path_type": "a path",
    "dict_type": _TABLE, "model_type": _TABLE, "dataclass_type": _TABLE, "dataclass_exact_type": _TABLE,
    "greater_than_equal": "a value >= {ge}", "greater_than": "a value > {gt}",
    "less_than_equal": "a value <= {le}", "less_than": "a value < {lt}",
    "too_short": "at least {min_length} item(s)", "too_long": "at most {max_length} item(s)",
}
_MISSING = ("missing", "missing_argument", "missing_keyword_only_argument", "missing_positional_only_argument")
_UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")


def messages(exc: ValidationError, root: type | None = None, *, table: str = "a table") -> list[str]:
    """The project's one line per problem of a pydantic ValidationError.

    ``root`` (the validated class) lets unknown-key messages list the known keys and
    missing-key messages say "section" for tables; ``table`` names a mapping ("an object" in JSON).
    """
    out = []
    for err in exc.errors(include_url=False):
        loc, kind, ctx = tuple(err["loc"]), err["type"], err.get("ctx") or {}
        path, value = loc_path(loc), err.get("input")
        if kind == "note":
            text = ctx["message"]
        elif kind in _MISSING:
            tp = _type_at(root, loc)
            text = (f"required section [{path}] is missing" if _fields(tp) is not None
                    else "required key is missing")
        elif kind in _UNKNOWN:
            known = _fields(_type_at(root, loc[:-1]))
            hint = f" (known keys: {', '.join(known)})" if known else ""
            text = f"unknown key {loc[-1]!r}{hint}, got {show(value)}"
        elif kind in ("value_error", "assertion_error"):
            text = str(ctx.get("error", err["msg"]))
        elif kind == "expected":
            text = f"{err['msg']}, got {show(value)}"
        else:
            phrase = _PHRASES.get(kind)
            phrase = table if phrase is _TABLE else phrase.format(**ctx) if phrase else err["msg"]
            text = f"expected {phrase}, got {show(value)}"
        out.append(f"{path}: {text}" if path else text)
    return out


def _unwrap(tp: Any) -> Any:
    """Strip Annotated[...] and Optional[...] around a type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin is typing.Union or origin is types.UnionType:
            arms = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(arms) == 1:
                tp = arms[0]
                continue
        return tp


def _fields(tp: Any) -> dict[str, Any] | None:
    """Key -> annotation of the keys a schema dataclass accepts (None for other types)."""
    if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
        return None
    infos = getattr(tp, "__pydantic_fields__", {})
    return {f.name: (infos[f.name].annotation if f.name in infos else f.type)
            for f in dataclasses.fields(tp) if f.init}


def _type_at(root: Any, loc: tuple) -> Any:
    tp = root
    for part in loc:
        tp = _unwrap(tp)
        fields = _fields(tp)
        if fields is not None and isinstance(part, str):
            tp = fields.get(part)
        elif typing.get_origin(tp) in (list, tuple) and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
        if tp is None:
            return None
    return _unwrap(tp)


# ----------------------------------------------------------------------------- field types

Int = Annotated[int, Strict()]
PosInt = Annotated[int, Strict(), Field(ge=1)]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]
Float = Annotated[float, Strict(), AllowInfNan(False)]  # int accepted (-> float), bool not
PosFloat = Annotated[float, Strict(), AllowInfNan(False), Field(gt=0)]
NonNegFloat = Annotated[float, Strict(), AllowInfNan(False), Field(ge=0)]
Ratio = Annotated[float, Strict(), AllowInfNan(False), Field(ge=0, lt=1)]  # e.g. compression_ratio
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]


def _non_empty(value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return value
    raise expected("a non-empty string")


NonEmptyStr = Annotated[str, PlainValidator(_non_empty)]


def one_of(choices: Iterable[str]) -> Any:
    """A string among ``choices``: ``expected one of a, b, c, got 'x'``."""
    choices = tuple(choices)

    def check(value: Any) -> str:
        if isinstance(value, str) and value in choices:
            return value
        raise expected("one of " + ", ".join(choices))
    return Annotated[str, PlainValidator(check)]


def exactly(n: int, item: Any, what: str = "items") -> Any:
    """A list of ``n`` values of type ``item`` (``expected 3 numbers, got [1.0, 2.0]``)."""
    def check(value: list) -> list:
        if len(value) != n:
            raise expected(f"{n} {what}")
        return value
    return Annotated[list[item], AfterValidator(check)]


def _db_range(value: list) -> list:
    if len(value) != 2:
        raise expected("[lo, hi] in dB")
    if value[0] > value[1]:
        raise expected("lo <= hi")
    return value


DbRange = Annotated[list[Float], AfterValidator(_db_range)]  # [lo, hi] SNR range in dB, lo <= hi


def dataclass_default(cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls`` as a dataclasses.field (tuples -> lists)."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=f.default_factory)
    if isinstance(f.default, tuple):
        value = list(f.default)
        return dataclasses.field(default_factory=lambda: list(value))
    return dataclasses.field(default=f.default)


def section_of(cls: type, name: str, *, module: str, derived: Iterable[str] = (),
               types: dict[str, Any] | None = None, doc: str | None = None) -> type:
    """A schema dataclass whose keys ARE the fields of dataclass ``cls`` (same names, order and
    defaults, read from ``cls``), less the ``derived`` ones (set from elsewhere). Assign it to the
    global ``name`` of ``module`` (so that it pickles).

    A field's type is ``types[name]`` when given, else follows its annotation: int -> Int,
    float -> Float, bool -> Bool, str -> Str, tuple[X, X, X] -> exactly(3, X) (as a list).
    """
    types = dict(types or {})
    derived = set(derived)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = set(types) - set(names)
    if unknown:
        raise TypeError(f"section_of({cls.__name__}): types for unknown fields {sorted(unknown)}")
    spec = []
    for key in names:
        if key in derived:
            continue
        spec.append((key, types.get(key) or _type_for(hints[key], f"{cls.__name__}.{key}"),
                     dataclass_default(cls, key)))
    section = dataclasses.make_dataclass(name, spec)
    section.__module__ = module
    section.__doc__ = doc or f"The fields of {cls.__name__} (defaults from it), less {sorted(derived)}."
    return schema(section)


_SCALARS: dict[Any, Any] = {int: Int, float: Float, bool: Bool, str: Str}


def _type_for(annotation: Any, where: str) -> Any:
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        if args and Ellipsis not in args and len(set(args)) == 1 and args[0] in _SCALARS:
            return exactly(len(args), _SCALARS[args[0]])
    raise TypeError(f"section_of: no schema type for {where}: {annotation!r} (pass types={{...}})")

