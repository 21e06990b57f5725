"""Results tables in README.md and docs/, rendered from the metrics files of ``pipelines/results``.

A table lives between ``<!-- results:NAME -->`` and ``<!-- /results -->`` in the file its spec names; only
that block is rewritten. A row's measured cell is its ``show`` template with each ``{run.metric}`` (or
``{run.metric:.2%}``) replaced by the mean over seeds, ``± sample std`` when there are several; a row not yet
measured says so, and a row whose stage changed since it was measured is marked stale. A test compares the
committed blocks with a fresh rendering, so a published figure cannot drift from its metrics file. An
ablation table (``ablation: ROW``) is the study's own table, as ``labline ablate`` printed it when the row was
measured, followed by the command, wall time, commit and date. A table may appear in several files.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

from labline.core.errors import ConfigError

_FIELD = re.compile(r"\{(?P<run>[\w-]+)\.(?P<metric>[^{}:]+)(?::(?P<spec>[^{}]*))?\}")
BLOCK = re.compile(r"(?P<open><!-- results:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(?P<close><!-- /results -->)", re.S)
STALE = "⚠ stale"
HEADER = ("experiment", "measured", "budget", "wall time", "measured at", "published reference")


def _value(values: list[float], spec: str) -> str:
    mean = statistics.fmean(values)
    text = format(mean, spec or ".3f")
    if len(values) > 1:
        text += " ± " + format(statistics.stdev(values), spec or ".3f")
    return text


def format_cell(show: str, values: dict[str, dict[str, list[float]]]) -> str:
    """``show`` with every field filled in; a field the row did not record names itself, so a typo is visible."""
    def fill(match: re.Match) -> str:
        found = values.get(match["run"], {}).get(match["metric"])
        return _value(found, match["spec"] or "") if found else f"(no {match['run']}.{match['metric']})"

    return _FIELD.sub(fill, show)


def _wall(record: dict[str, Any]) -> str:
    wall = record["wall_s"]
    if wall is None:  # trained by another pipeline's stages
        return "–"
    return f"{wall / 60:.1f} min" if wall >= 60 else f"{wall:.0f} s"


def _when(name: str, record: dict[str, Any], stale: set[str]) -> str:
    cpu = record.get("machine", {}).get("cpu_capability")  # rows measured before 2026-12-04 did not record it
    return f"`{record['commit'][:7]}`, {record['date']}" + (f", {cpu}" if cpu else "") + (f" {STALE}" if name in stale else "")


def _ablation_table(name: str, record: dict[str, Any] | None, stale: set[str], budget: str) -> str:
    if record is None:
        return f"Not measured yet: `make results` (row `{name}`; budget: {budget}).\n"
    return (f"{record['table']}\nMeasured by `make results` (row `{name}`: `{record['command']}`; {budget}): "
            f"{_wall(record)}, {_when(name, record, stale)}.\n")


def render_table(table: dict[str, Any], records: dict[str, dict[str, Any] | None], stale: set[str]) -> str:
    if "ablation" in table:
        name = table["ablation"]
        return _ablation_table(name, records.get(name), stale, table.get("budget", ""))
    lines = ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    for entry in table["rows"]:
        name = entry["row"]
        record = records.get(name)
        if record is None:
            measured, wall, when = f"not measured yet: `make results` (row `{name}`)", "–", "–"
        else:
            measured, wall, when = format_cell(entry["show"], record["values"]), _wall(record), _when(name, record, stale)
        cells = [entry["label"], measured, entry.get("budget", ""), wall, when, entry.get("reference", "–")]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render_file(text: str, spec: dict[str, Any], records: dict[str, dict[str, Any] | None], stale: set[str],
                path: str) -> str:
    """``text`` with each results block it holds re-rendered; a block naming an unknown table is an error."""
    tables = spec.get("tables", {})

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in tables:
            raise ConfigError(path, f"results block '{name}' is not a table of pipelines/results/results.yaml",
                              sorted(tables))
        body = render_table(tables[name], records, stale)
        return match["open"] + body + match["close"]

    return BLOCK.sub(replace, text)


def render_all(root: Path, spec: dict[str, Any], records: dict[str, dict[str, Any] | None],
               stale: set[str]) -> dict[Path, str]:
    """Every file that holds a results table, re-rendered (path -> new text)."""
    files = sorted({root / file for table in spec.get("tables", {}).values()
                    for file in ([table["file"]] if "file" in table else table["files"])})
    return {path: render_file(path.read_text(), spec, records, stale, str(path.relative_to(root))) for path in files}
