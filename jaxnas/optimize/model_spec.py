"""Which model a fit trains: a ``Spec`` of a model name and its argument.

The config holds a model as the group ``{name, arg}`` (``optimize.baseline.model``); the command line
takes the short form ``name[:arg]`` (``cnn:32,64``, ``genotype:DARTS_V2``,
``chain:conv3x3-32 > maxpool``), parsed once into the group when the config is read. Whether the
name is a registered model or space, and whether its argument builds, is checked at set-up, once the
user's registrations (``run.imports``) are in (``models.build``). An architecture drawn from a space
travels as the space's own object in ``Spec.arch``; its text (``arg``) is for records only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from jaxnas.errors import JaxnasError

FIELDS = ("name", "arg")


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    arg: str = ""
    arch: Any = dataclasses.field(default=None, compare=False)  # a space's architecture object, built once

    def __str__(self) -> str:
        return f"{self.name}:{self.arg}" if self.arg else self.name


def group(name: str, arg: str = "") -> ml_collections.ConfigDict:
    """A model as the config holds it."""
    return ml_collections.ConfigDict(dict(name=name, arg=arg))


def parse_text(text: str) -> Spec:
    """``"name[:arg]"`` as a ``Spec`` (the name before the first colon, both stripped)."""
    name, _, arg = str(text).partition(":")
    return Spec(name.strip(), arg.strip())


def parse(text: str, where: str) -> ml_collections.ConfigDict:
    """The command line's short form as the config's group."""
    s = parse_text(text)
    return check(group(s.name, s.arg), where)


def check(value, where: str) -> ml_collections.ConfigDict:
    """A model group given in a config, canonical: a non-empty name and a text argument."""
    if isinstance(value, str):
        return parse(value, where)
    if not isinstance(value, (dict, ml_collections.ConfigDict)) or set(value.keys()) - set(FIELDS):
        raise JaxnasError(f"{where} must be a group {{name, arg}} (e.g. {{'name': 'cnn', 'arg': '32,64'}}; on the "
                          f"command line cnn:32,64), got {value!r}")
    name, arg = value.get("name", ""), value.get("arg", "")
    if not isinstance(name, str) or not name.strip() or ":" in name:
        raise JaxnasError(f"{where}.name must be a model or space name, got {name!r}")
    if not isinstance(arg, str):
        raise JaxnasError(f"{where}.arg must be text (the model's argument), got {arg!r}")
    return group(name.strip(), arg.strip())


def of(value) -> Spec:
    """The ``Spec`` of a config group, a ``Spec``, or a short form read from a record."""
    if isinstance(value, Spec):
        return value
    if isinstance(value, (dict, ml_collections.ConfigDict)):
        return Spec(value["name"], value["arg"])
    return parse_text(value)
