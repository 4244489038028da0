"""Table: named NumPy columns of equal length, shown as HTML in Jupyter and as markdown in text.

The tables here are small (a row per logged step, eval, experiment or op), so NumPy columns do all the
arithmetic the figures need; a DataFrame library would add a large dependency for printing alone.
"""

from __future__ import annotations

import html

import numpy as np


class Table:
    def __init__(self, columns: dict):
        self.columns = {name: np.asarray(values) for name, values in columns.items()}
        lengths = {len(v) for v in self.columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"Table columns differ in length: { {k: len(v) for k, v in self.columns.items()} }")
        self._n = lengths.pop() if lengths else 0

    @classmethod
    def from_records(cls, records: list[dict], names: list[str]) -> "Table":
        """One column per name; a record without the key gives NaN (numbers) or None."""
        cols = {}
        for name in names:
            values = [r.get(name) for r in records]
            numeric = all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values)
            cols[name] = (np.array([np.nan if v is None else v for v in values], dtype=float) if numeric
                          else np.array(values, dtype=object))
        return cls(cols)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise KeyError(f"no column {name!r}; columns: {', '.join(self.columns)}")
        return self.columns[name]

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def has_data(self, name: str) -> bool:
        """The column exists and holds at least one value that is not NaN/None."""
        if name not in self.columns or not self._n:
            return False
        col = self.columns[name]
        return bool(np.any(~np.isnan(col))) if col.dtype.kind == "f" else any(v is not None for v in col)

    def select(self, rows) -> "Table":
        """The rows picked by a boolean mask or an index array."""
        return Table({k: v[rows] for k, v in self.columns.items()})

    def sort(self, by: str, descending: bool = False) -> "Table":
        order = np.argsort(self[by], kind="stable")
        return self.select(order[::-1] if descending else order)

    def rows(self) -> list[dict]:
        return [{k: v[i].item() if hasattr(v[i], "item") else v[i] for k, v in self.columns.items()}
                for i in range(self._n)]

    @staticmethod
    def _cell(v) -> str:
        if v is None:
            return ""
        if isinstance(v, (float, np.floating)):
            if np.isnan(v):
                return ""
            return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:.6g}"  # counts stay exact
        return str(v)

    def to_markdown(self, max_rows: int = 50) -> str:
        lines = ["| " + " | ".join(self.names) + " |", "|" + "---|" * len(self.names)]
        for row in self.rows()[:max_rows]:
            lines.append("| " + " | ".join(self._cell(v).replace("|", "\\|") for v in row.values()) + " |")
        if self._n > max_rows:
            lines.append(f"({self._n - max_rows} more rows)")
        return "\n".join(lines)

    def _repr_html_(self, max_rows: int = 50) -> str:
        head = "".join(f"<th>{html.escape(n)}</th>" for n in self.names)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(self._cell(v))}</td>" for v in row.values()) + "</tr>"
                       for row in self.rows()[:max_rows])
        more = f"<p>({self._n - max_rows} more rows)</p>" if self._n > max_rows else ""
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"

    def __repr__(self) -> str:
        return self.to_markdown()
