"""The progress bar of a generation scheme (levels, AR calls, ART•V frames)."""
from __future__ import annotations


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "segment"):
    """A tqdm bar that stays on screen (one line per level or scheme), or None."""
    if not enabled:
        return None
    # Deferred: tqdm is not on the accelerator machines benchmarks/device_check.py runs on (this
    # module is on its import path); only a run that shows progress needs it.
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit)
