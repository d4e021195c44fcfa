"""Exemplars of the front ends' histograms when there are several front ends.

prometheus_client's multiprocess files (one per front end, summed at scrape time) keep no exemplars. So each
front end keeps the latest exemplar of each bucket it observed with one (a sampled request's trace id) and
writes them to ``exemplars_<pid>.json`` beside its metric files, once per ``WRITE_DELAY`` at most; a scrape,
by whichever front end, reads every front end's file and gives each bucket the newest exemplar any front end
holds for it (``merge.py``). A scrape sees an exemplar up to ``WRITE_DELAY`` late.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
from prometheus_client.samples import Exemplar

WRITE_DELAY = 0.2  # seconds an exemplar may wait to be written (at most 5 writes a second, whatever the load)
SampleKey = tuple[str, tuple[tuple[str, str], ...]]  # a sample's name and sorted labels, as merge.py keys them


class ExemplarFile:
    """This front end's latest exemplar per bucket, written for the scraping front end."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / f"exemplars_{os.getpid()}.json"
        self.latest: dict[SampleKey, tuple[str, dict[str, str], Exemplar]] = {}
        self._due = False

    def put(self, name: str, labels: dict[str, str], exemplar: Exemplar) -> None:
        """Keep ``exemplar`` for the bucket sample ``name{labels}``; written within WRITE_DELAY (on the event loop)."""
        self.latest[(name, tuple(sorted(labels.items())))] = (name, labels, exemplar)
        if not self._due:
            self._due = True
            asyncio.get_running_loop().call_later(WRITE_DELAY, self.write)

    def write(self) -> None:
        self._due = False
        rows = [[name, labels, exemplar.labels, exemplar.value, exemplar.timestamp]
                for name, labels, exemplar in self.latest.values()]
        partial = self.path.with_suffix(".partial")
        partial.write_bytes(orjson.dumps(rows))
        os.replace(partial, self.path)  # a reader sees the old file or the new one, never half of one


def read_exemplars(directory: str | Path) -> dict[SampleKey, Exemplar]:
    """Every front end's exemplars, the newest for each bucket sample."""
    newest: dict[SampleKey, Exemplar] = {}
    for path in Path(directory).glob("exemplars_*.json"):
        try:
            rows = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue  # its front end is writing it for the first time, or it went away
        for name, labels, exemplar_labels, value, timestamp in rows:
            key = (name, tuple(sorted(labels.items())))
            seen = newest.get(key)
            if seen is None or (seen.timestamp or 0.0) < timestamp:
                newest[key] = Exemplar(exemplar_labels, value, timestamp)
    return newest
