"""The hyperparameter search space, declared in the config as one string per hyperparameter.

``optimize.hparams.<name>`` is one of:

* ``""``: not searched; the baseline's value is used;
* ``"log:1e-4:0.3"``: a float drawn on a log scale; ``"float:0:0.2"``: on a linear scale;
* ``"int:5:30"``; ``"logint:16:256"``;
* ``"choice:sgd,adamw"``: categorical (values read as int, then float, else text); separated by ``|``
  instead where a value holds commas: ``"choice:cnn:32,64|cnn:64,128"``;
* any of these followed by ``" if <other>=<value>"``: searched only when the hyperparameter
  ``<other>`` took ``<value>`` (else the baseline's value), e.g. ``"float:0.8:0.99 if optimizer=sgd"``.

Specs are parsed as text, never evaluated.
"""

from __future__ import annotations

import dataclasses
import math

from jaxnas.errors import JaxnasError

KINDS = ("log", "float", "int", "logint", "choice")


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple = ()
    when: tuple[str, object] | None = None

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


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _number(text: str, name: str, spec: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise JaxnasError(f"optimize.hparams.{name}={spec!r}: {text!r} is not a number") from None


def parse(name: str, spec: str) -> Param | None:
    """One field's spec as a ``Param`` (``None`` when not searched); a malformed one is an error naming it."""
    spec = spec.strip()
    if not spec:
        return None
    body, _, cond = spec.partition(" if ")
    when = None
    if cond:
        other, eq, value = cond.partition("=")
        if not eq or not other.strip():
            raise JaxnasError(f"optimize.hparams.{name}={spec!r}: a condition looks like 'if optimizer=sgd'")
        when = (other.strip(), _value(value.strip()))
    kind, _, rest = body.strip().partition(":")
    if kind not in KINDS:
        raise JaxnasError(f"optimize.hparams.{name}={spec!r}: unknown kind {kind!r}; allowed: {', '.join(KINDS)} "
                          f"(e.g. log:1e-4:0.3, choice:sgd,adamw), or '' for the baseline's value")
    if kind == "choice":
        sep = "|" if "|" in rest else ","
        choices = tuple(_value(c.strip()) for c in rest.split(sep) if c.strip())
        if not choices:
            raise JaxnasError(f"optimize.hparams.{name}={spec!r}: a choice needs at least one value")
        return Param(name, kind, choices=choices, when=when)
    bounds = rest.split(":")
    if len(bounds) != 2:
        raise JaxnasError(f"optimize.hparams.{name}={spec!r}: {kind} needs two bounds, as {kind}:LOW:HIGH")
    low, high = (_number(b, name, spec) for b in bounds)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise JaxnasError(f"optimize.hparams.{name}={spec!r}: bounds must be finite numbers")
    if not low < high or (kind in ("log", "logint") and low <= 0):
        raise JaxnasError(f"optimize.hparams.{name}={spec!r}: needs LOW < HIGH{' and LOW > 0' if 'log' in kind else ''}")
    if kind in ("int", "logint") and (low != int(low) or high != int(high)):
        raise JaxnasError(f"optimize.hparams.{name}={spec!r}: integer bounds expected")
    return Param(name, kind, low, high, when=when)


def parse_all(hparams: dict) -> list[Param]:
    """The searched hyperparameters, parents before the ones conditioned on them; a condition on a
    field that is not searched, or a cycle, is an error."""
    params = {n: p for n, s in hparams.items() if (p := parse(n, str(s))) is not None}
    for p in params.values():
        if p.when and p.when[0] not in params:
            raise JaxnasError(f"optimize.hparams.{p.name}: its condition names {p.when[0]!r}, which is not searched; "
                              f"searched: {', '.join(params) or 'none'}")
        if p.when and not params[p.when[0]].can_take(p.when[1]):
            parent = params[p.when[0]]
            raise JaxnasError(f"optimize.hparams.{p.name}: its condition 'if {p.when[0]}={p.when[1]}' can never hold "
                              f"(so it would never be searched): {p.when[0]} is {parent.describe()}")
    ordered, placed = [], set()
    while len(ordered) < len(params):
        ready = [p for p in params.values() if p.name not in placed and (not p.when or p.when[0] in placed)]
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
        if p.when is None or out.get(p.when[0]) == p.when[1]:
            out[p.name] = p.suggest(trial)
    return out


def max_value(params: list[Param], name: str, fixed: dict):
    """The largest value ``name`` can take (the pruner's maximum resource for ``epochs``)."""
    for p in params:
        if p.name == name:
            return int(p.high) if p.kind != "choice" else max(p.choices)
    return fixed[name]
