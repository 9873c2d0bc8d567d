"""The ``table`` evaluator: scores looked up in a tabular benchmark CSV supplied by the user
(e.g. NAS-Bench-201 exported to CSV: arch strings or indices, accuracy columns, optionally a
training-time column that a time budget then counts, as the benchmark's simulated searches do)."""

from __future__ import annotations

import csv
import io
import os

from jaxnas.errors import JaxnasError
from jaxnas.evaluators.registry import register_evaluator


class TableEvaluator:
    """Scores from a CSV: ``arch_column`` (arch string or index), ``score_column`` (the search signal),
    ``test_column`` and optionally ``f1_column`` (final report) and ``cost_column`` (seconds)."""

    def __init__(self, path: str, space, arch_column: str = "arch", score_column: str = "val_acc",
                 test_column: str = "test_acc", f1_column: str = "", cost_column: str = ""):
        if not path:
            raise JaxnasError("evaluator.kind=table needs evaluator.table=<path to a CSV>")
        if not os.path.isfile(path):
            raise JaxnasError(f"tabular benchmark file {path!r} does not exist")
        self.space, self.path = space, path
        self.has_cost = bool(cost_column)  # without it every cost is 0 and a time budget never ends
        self.columns = {"arch": arch_column, "score": score_column, "test": test_column}
        if f1_column:
            self.columns["f1"] = f1_column
        if cost_column:
            self.columns["cost"] = cost_column
        try:
            with open(path, newline="", encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError as e:
            raise JaxnasError(f"tabular benchmark file {path!r} is not UTF-8 text ({e})") from None
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        missing = [c for c in self.columns.values() if c not in header]
        if missing:
            raise JaxnasError(f"{path}: column(s) {', '.join(missing)} missing; the file has: "
                              f"{', '.join(header) or 'no header'}")
        self.rows: dict[str, dict] = {}
        for line, row in enumerate(reader, start=2):
            try:
                arch = space.decode(row[arch_column])
            except JaxnasError as e:
                raise JaxnasError(f"{path} line {line}: {e}") from None
            values = {}
            for key, col in self.columns.items():
                if key == "arch":
                    continue
                try:
                    values[key] = float(row[col])
                except (TypeError, ValueError):
                    raise JaxnasError(f"{path} line {line}: column {col!r} is {row[col]!r}, "
                                      f"not a number") from None
            self.rows[space.encode(arch)] = values
        if not self.rows:
            raise JaxnasError(f"{path}: no rows")

    def _row(self, arch) -> dict:
        key = self.space.encode(arch)
        if key not in self.rows:
            raise JaxnasError(f"architecture {key} is not in {self.path}")
        return self.rows[key]

    def score(self, arch) -> tuple[float, float]:
        row = self._row(arch)
        return row["score"], row.get("cost", 0.0)

    def test(self, arch) -> dict:
        row = self._row(arch)
        return {"accuracy": row["test"], "macro_f1": row.get("f1"), "source": f"table {self.path}"}

    def optimum(self) -> tuple[str, float]:
        """The architecture with the best score in the table (for reports)."""
        key = max(self.rows, key=lambda k: self.rows[k]["score"])
        return key, self.rows[key]["score"]


@register_evaluator("table")
def _table(space, cfg, log=print):
    e = cfg.evaluator
    return TableEvaluator(e.table, space, e.arch_column, e.score_column, e.test_column, e.f1_column, e.cost_column)
