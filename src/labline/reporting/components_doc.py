"""Generate docs/components.md from conf/ so the component list can never go stale.

Each option's description is the comment block at the top of its YAML; each
knob's is the comment on or just above its line. A test compares the committed
file with a fresh rendering.
"""

from __future__ import annotations

import re
from pathlib import Path

_KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w\-]*):\s*(?P<value>[^#]*?)\s*(#\s*(?P<comment>.*))?$")
SKIP_GROUPS = {"hydra"}


def _describe(path: Path) -> tuple[str, list[tuple[str, str, str]]]:
    """(description, [(dotted knob, default, comment)]) of one option file."""
    lines = path.read_text().splitlines()
    description: list[str] = []
    knobs: list[tuple[str, str, str]] = []
    pending: list[str] = []
    stack: list[tuple[int, str]] = []
    seen_key = False
    in_defaults = False
    for raw in lines:
        stripped = raw.strip()
        if stripped.startswith("# @package"):
            continue
        if stripped.startswith("#"):
            (pending if seen_key else description).append(stripped.lstrip("#").strip())
            continue
        if not stripped or stripped.startswith("- ") or stripped == "{}":
            pending = [] if not stripped else pending
            continue
        match = _KEY.match(raw)
        if not match:
            continue
        seen_key = True
        indent, key, value = len(match["indent"]), match["key"], match["value"]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if indent == 0:
            in_defaults = key == "defaults"
        dotted = ".".join([s for _, s in stack] + [key])
        stack.append((indent, key))
        comment = match["comment"] or " ".join(pending)
        pending = []
        if in_defaults or key in ("_target_", "_partial_") or value == "":
            continue
        knobs.append((dotted, value, comment))
    return " ".join(description), knobs


def _target(path: Path) -> str:
    match = re.search(r"^_target_:\s*(\S+)", path.read_text(), re.MULTILINE)
    return match.group(1) if match else ""


def render(conf: Path) -> str:
    out = ["# Components", "",
           "Generated from `conf/` by `labline docs` — do not edit by hand. Select an option with `GROUP=OPTION`, "
           "change a knob with `GROUP.KNOB=VALUE` (e.g. `labline train backbone=cnn backbone.dropout=0.2`).", ""]
    groups = sorted(p for p in conf.iterdir() if p.is_dir() and p.name not in SKIP_GROUPS)
    out.append("Groups: " + ", ".join(f"[`{g.name}`](#{g.name})" for g in groups) + ".")
    for group in groups:
        out += ["", f"## {group.name}", ""]
        for option in sorted(group.glob("*.yaml")):
            description, knobs = _describe(option)
            target = _target(option)
            head = f"- **`{group.name}={option.stem}`**"
            head += f" — {description}" if description else ""
            head += f" (`{target}`)" if target else ""
            out.append(head)
            out += [f"  - `{k}` = `{v}`" + (f": {c}" if c else "") for k, v, c in knobs]
    return "\n".join(out) + "\n"


def write(conf: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(conf))
    return target
