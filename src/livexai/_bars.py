"""Progress bars for long loops over many inputs: tqdm's (the notebook widget in Jupyter) when asked for and
installed, else a stand-in that draws nothing, so callers update and close a bar without checking."""

from __future__ import annotations

from typing import Any


def progress_bar(total: int, enabled: bool, desc: str, unit: str) -> Any:
    """A bar over ``total`` ``unit``s labelled ``desc``; silent when not ``enabled`` or without tqdm."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, unit=unit)
        except ImportError:
            pass
    return _NoBar()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
