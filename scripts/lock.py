"""Write requirements.lock (exact versions of the installed environment) and environment.yml from it.

Run through `make lock` after changing requirements.in; conda users then get the same pins.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    """Freeze the current interpreter's packages (pip and setuptools included) into the two files."""
    command = [sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"]
    frozen = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()
    pins = sorted((p for p in frozen if "==" in p and not p.startswith("melhubert")), key=str.lower)
    (ROOT / "requirements.lock").write_text("\n".join(pins) + "\n")
    env = ["name: melhubert", "channels:", "  - conda-forge", "dependencies:", "  - python=3.11", "  - pip",
           "  - pip:"] + [f"      - {p}" for p in pins] + ["      - -e ."]
    (ROOT / "environment.yml").write_text("\n".join(env) + "\n")


if __name__ == "__main__":
    main()
