"""The hyperparameter search space: one group per hyperparameter under ``optimize.hparams``.

A group is ``{kind, low, high, choices, when}``, checked once when the config is read (``check``):

* ``kind="none"``: not searched; the baseline's value is used;
* ``kind="log"`` / ``"float"``: a float in [low, high], drawn on a log / linear scale;
* ``kind="int"`` / ``"logint"``: an integer in [low, high];
* ``kind="choice"``: one of ``choices`` (numbers or names);
* ``when={"optimizer": "sgd"}``: searched only while every named hyperparameter took that value
  (else the baseline's value).

A Python config builds them with ``log_uniform``, ``uniform``, ``integer``, ``choice`` and
``not_searched``. The command line takes a short form, parsed once into the group (``parse``):
``"log:1e-4:0.3"``, ``"float:0:0.2"``, ``"int:5:30"``, ``"logint:16:256"``, ``"choice:sgd,adamw"``
(separated by ``|`` where a value holds commas: ``"choice:cnn:32,64|cnn:64,128"``), ``""`` for none,
each optionally followed by ``" if <other>=<value>"``. Nothing is ever evaluated.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections

from jaxnas.errors import JaxnasError

KINDS = ("none", "log", "float", "int", "logint", "choice")
FIELDS = ("kind", "low", "high", "choices", "when")


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple = ()
    when: tuple[tuple[str, object], ...] = ()  # (hyperparameter, value) pairs that must all hold

    def active(self, hp: dict) -> bool:
        """Whether it is searched given the other hyperparameters' values ``hp`` (its conditions hold)."""
        return all(hp.get(other) == value for other, value in self.when)

    def suggest(self, trial):
        if self.kind in ("log", "float"):
            return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "log")
        if self.kind in ("int", "logint"):
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.kind == "logint")
        return trial.suggest_categorical(self.name, list(self.choices))

    def distribution(self):
        """The Optuna distribution ``suggest`` draws from (to rebuild a study's trials, and to check that
        a resumed study draws from what its trials were drawn from)."""
        import optuna

        if self.kind in ("log", "float"):
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.kind == "log")
        if self.kind in ("int", "logint"):
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.kind == "logint")
        return optuna.distributions.CategoricalDistribution(list(self.choices))

    def can_take(self, value) -> bool:
        """Whether a trial can draw ``value`` for this parameter."""
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind in ("int", "logint") and value != int(value):
            return False
        return self.low <= value <= self.high

    def describe(self) -> str:
        if self.kind == "choice":
            return f"one of {', '.join(map(str, self.choices))}"
        return f"{'an integer' if 'int' in self.kind else 'a number'} in [{self.low:g}, {self.high:g}]"


def group(kind: str = "none", low: float = 0.0, high: float = 0.0, choices=(), when: dict | None = None
          ) -> ml_collections.ConfigDict:
    """One hyperparameter's group as the config holds it, unchecked (``check`` makes it canonical)."""
    return ml_collections.ConfigDict(dict(kind=kind, low=low, high=high, choices=tuple(choices),
                                          when=ml_collections.ConfigDict(dict(when or {}))))


def not_searched() -> ml_collections.ConfigDict:
    """The baseline's value is used."""
    return check(group(), "not_searched()")


def log_uniform(low: float, high: float, when: dict | None = None) -> ml_collections.ConfigDict:
    """A float in [low, high], drawn on a log scale."""
    return check(group("log", low, high, when=when), "log_uniform()")


def uniform(low: float, high: float, when: dict | None = None) -> ml_collections.ConfigDict:
    """A float in [low, high], drawn on a linear scale."""
    return check(group("float", low, high, when=when), "uniform()")


def integer(low: int, high: int, log: bool = False, when: dict | None = None) -> ml_collections.ConfigDict:
    """An integer in [low, high] (on a log scale with ``log``)."""
    return check(group("logint" if log else "int", low, high, when=when), "integer()")


def choice(*values, when: dict | None = None) -> ml_collections.ConfigDict:
    """One of ``values`` (numbers or names)."""
    return check(group("choice", choices=values, when=when), "choice()")


def scalar(text: str):
    """A number where the text is one, else the text (a choice's value, read from the command line)."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _number(text: str, where: str, spec: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise JaxnasError(f"{where}={spec!r}: {text!r} is not a number") from None


def parse(spec: str, where: str) -> ml_collections.ConfigDict:
    """The command line's short form (module docstring) as a checked group; a malformed one is one error
    naming ``where`` (the field)."""
    text = spec.strip()
    if text in ("", "none"):
        return check(group("none", 0.0, 0.0), where)
    body, _, cond = text.partition(" if ")
    when = {}
    if cond:
        other, eq, value = cond.partition("=")
        if not eq or not other.strip():
            raise JaxnasError(f"{where}={spec!r}: a condition looks like 'if optimizer=sgd'")
        when = {other.strip(): scalar(value.strip())}
    kind, _, rest = body.strip().partition(":")
    if kind not in KINDS:
        raise JaxnasError(f"{where}={spec!r}: unknown kind {kind!r}; allowed: {', '.join(KINDS[1:])} "
                          f"(e.g. log:1e-4:0.3, choice:sgd,adamw), or '' for the baseline's value")
    if kind == "choice":
        sep = "|" if "|" in rest else ","
        return check(group(kind, choices=[scalar(c.strip()) for c in rest.split(sep) if c.strip()], when=when),
                     where)
    bounds = rest.split(":")
    if len(bounds) != 2:
        raise JaxnasError(f"{where}={spec!r}: {kind} needs two bounds, as {kind}:LOW:HIGH")
    low, high = (_number(b, where, spec) for b in bounds)
    return check(group(kind, low, high, when=when), where)


def check(value, where: str) -> ml_collections.ConfigDict:
    """A group given in a config (a dict or ConfigDict with some of ``FIELDS``), canonical and checked
    on its own: the kind known, finite bounds LOW < HIGH (> 0 on a log scale, integers for int kinds),
    at least one choice, conditions that name a hyperparameter. Else one error naming ``where``."""
    if isinstance(value, str):
        return parse(value, where)
    if not isinstance(value, (dict, ml_collections.ConfigDict)):
        raise JaxnasError(f"{where} must be a group {{kind, low, high, choices, when}} (e.g. "
                          f"jaxnas.optimize.hpspace.log_uniform(1e-4, 0.3)), got {value!r}")
    unknown = sorted(set(value.keys()) - set(FIELDS))
    if unknown:
        raise JaxnasError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(FIELDS)}")
    kind = value.get("kind", "none")
    if kind not in KINDS:
        raise JaxnasError(f"{where}.kind: unknown value {kind!r}; allowed: {', '.join(KINDS)}")
    when = value.get("when") or {}
    if not isinstance(when, (dict, ml_collections.ConfigDict)) or not all(isinstance(k, str) for k in when):
        raise JaxnasError(f"{where}.when must map hyperparameter names to values, e.g. {{'optimizer': 'sgd'}}, "
                          f"got {when!r}")
    for k, v in when.items():
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise JaxnasError(f"{where}.when.{k} must be a number or a name, got {v!r}")
    choices = value.get("choices", ())
    if not isinstance(choices, (list, tuple)):
        raise JaxnasError(f"{where}.choices must be a list of numbers or names, got {choices!r}")
    if kind == "choice":
        if not choices:
            raise JaxnasError(f"{where}: a choice needs at least one value in choices")
        for c in choices:
            if not isinstance(c, (str, int, float)) or isinstance(c, bool):
                raise JaxnasError(f"{where}.choices: {c!r} is not a number or a name")
        if len(set(map(repr, choices))) != len(choices):
            raise JaxnasError(f"{where}.choices {list(choices)!r} repeats a value")
        return group(kind, 0.0, 0.0, choices=choices, when=dict(when))
    if choices:
        raise JaxnasError(f"{where}.choices is for kind=choice, not {kind}")
    if kind == "none":
        if when:
            raise JaxnasError(f"{where}: kind=none is not searched, so it takes no condition (when)")
        return group("none", 0.0, 0.0)
    low, high = value.get("low", 0.0), value.get("high", 0.0)
    for name, b in (("low", low), ("high", high)):
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b):
            raise JaxnasError(f"{where}.{name} must be a finite number, got {b!r}")
    if not low < high or (kind in ("log", "logint") and low <= 0):
        raise JaxnasError(f"{where}: needs low < high{' and low > 0' if 'log' in kind else ''}, got low={low!r}, "
                          f"high={high!r}")
    if kind in ("int", "logint") and (low != int(low) or high != int(high)):
        raise JaxnasError(f"{where}: {kind} needs integer bounds, got low={low!r}, high={high!r}")
    return group(kind, float(low), float(high), when=dict(when))


def describe(g) -> str:
    """A group in the command line's short form (for messages and the report)."""
    if g.kind == "none":
        return "''"
    body = (f"choice:{('|' if any(',' in str(c) for c in g.choices) else ',').join(map(str, g.choices))}"
            if g.kind == "choice" else f"{g.kind}:{g.low:g}:{g.high:g}")
    return body + "".join(f" if {k}={v}" for k, v in g.when.items())


def params(hparams) -> list[Param]:
    """The searched hyperparameters of the ``optimize.hparams`` groups, parents before the ones
    conditioned on them; a condition on a hyperparameter that is not searched, one that can never
    hold, or a cycle, is an error."""
    out = {}
    for name, g in hparams.items():
        g = check(g, f"optimize.hparams.{name}")
        if g.kind != "none":
            out[name] = Param(name, g.kind, g.low, g.high, tuple(g.choices), tuple(g.when.items()))
    for p in out.values():
        for other, value in p.when:
            if other not in out:
                raise JaxnasError(f"optimize.hparams.{p.name}: its condition names {other!r}, which is not searched; "
                                  f"searched: {', '.join(out) or 'none'}")
            if not out[other].can_take(value):
                raise JaxnasError(f"optimize.hparams.{p.name}: its condition '{other}={value}' can never hold (so "
                                  f"it would never be searched): {other} is {out[other].describe()}")
    ordered, placed = [], set()
    while len(ordered) < len(out):
        ready = [p for p in out.values() if p.name not in placed and all(o in placed for o, _ in p.when)]
        if not ready:
            raise JaxnasError("optimize.hparams: the conditions form a cycle")
        for p in ready:
            ordered.append(p)
            placed.add(p.name)
    return ordered


def suggest(trial, params: list[Param], fixed: dict) -> dict:
    """The trial's hyperparameters: ``fixed`` (the baseline's) overridden by each active searched one."""
    out = dict(fixed)
    for p in params:
        if p.active(out):
            out[p.name] = p.suggest(trial)
    return out


def max_value(params: list[Param], name: str, fixed: dict):
    """The largest value ``name`` can take (the pruner's maximum resource for ``epochs``)."""
    for p in params:
        if p.name == name:
            return int(p.high) if p.kind != "choice" else max(p.choices)
    return fixed[name]
