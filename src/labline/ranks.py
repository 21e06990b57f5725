"""Entry point of the other ranks of a distributed training: Lightning's ``ddp`` launcher runs this file.

Rank zero (``labline train``, a DVC stage, a study) sets the plan (see ``labline.runs.ranks``); this script
reads it and trains as one more rank. Run as a script, its own folder heads ``sys.path``; it is dropped first
so that labline's sub-packages (``data``, ``models``...) never shadow top-level modules of the same name.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]

    from labline.core.interrupts import Interrupted
    from labline.runs.ranks import follow, rank_plan

    plan = rank_plan()
    if plan is None:
        sys.exit("labline/ranks.py is started by rank zero of a distributed training (trainer.devices > 1), not by hand")
    try:
        follow(plan)
    except Interrupted as stop:
        sys.exit(stop.exit_code)
