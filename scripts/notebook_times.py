"""Print how long each executed notebook ran, from the timings papermill stores in its metadata.

Usage: python scripts/notebook_times.py [notebooks/*.ipynb]  (default: every notebook in notebooks/)

The README's timing rows are read from this table after a `make figures`; the span from the first notebook's start
to the last one's end includes the kernels' start-up, which the per-notebook durations leave out.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path


def minutes_seconds(seconds: float) -> str:
    """`seconds` as 'M min S s' (or 'H h M min' from an hour on)."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min {seconds % 60} s"


def main(paths: list[Path]) -> None:
    """Print a Markdown table of each notebook's papermill duration, the sum, and the wall-clock span."""
    rows, starts, ends = [], [], []
    for path in paths:
        meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
        if not meta.get("duration"):
            raise SystemExit(f"{path}: no papermill timing in its metadata (run it with `make figures` first)")
        rows.append((path.stem, meta["duration"], meta.get("parameters", {}).get("scale", "?")))
        starts.append(datetime.fromisoformat(meta["start_time"]))
        ends.append(datetime.fromisoformat(meta["end_time"]))
    print("| notebook | scale | ran |\n|---|---|---|")
    for name, duration, scale in rows:
        print(f"| `{name}` | {scale} | {minutes_seconds(duration)} |")
    print(f"| all ({len(rows)}) | | {minutes_seconds(sum(r[1] for r in rows))} of notebook time; "
          f"{minutes_seconds((max(ends) - min(starts)).total_seconds())} from the first start to the last end |")


if __name__ == "__main__":
    given = [Path(p) for p in sys.argv[1:]]
    main(given or sorted(Path("notebooks").glob("[!.]*.ipynb")))
