"""Unusable records: skipped, counted, named, and a limit on how many a run accepts.

Real video datasets of hundreds of thousands of files hold a few that do not decode. The input pipeline replaces
such a record by another one (jepa.data.pipeline) and reports it with the batch; training, probing and AC training
keep a `SkipLog` of what was skipped. A run stops, with one line naming the records, once the share of unusable
records is above `max_fraction` with 95% confidence (the lower end of the Wilson interval of skipped / read), so a
few bad records early in a run do not stop it and a dataset that is mostly broken stops it within a batch or two.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

from jepa.data.records import RecordError
from jepa.stats import wilson_interval

MAX_NOTES = 100  # records named in the summary (the count covers all)


class TooManyUnusableRecords(RecordError):
    """The share of unusable records exceeded the configured limit."""


@dataclasses.dataclass
class SkipLog:
    """Counts of records read and skipped, the first `MAX_NOTES` skipped ones named ('record X: why')."""

    max_fraction: float = 0.1
    what: str = "records"
    read: int = 0
    skipped: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)

    def add(self, used: int, skipped: int = 0, notes: Sequence[str] = ()) -> None:
        """Accounts `used` good records and `skipped` unusable ones (`notes`: why, naming them); raises
        `TooManyUnusableRecords` past the limit."""
        self.read += used + skipped
        self.skipped += skipped
        for note in notes:
            if len(self.notes) < MAX_NOTES and note not in self.notes:
                self.notes.append(note)
        if self.skipped and wilson_interval(self.skipped, self.read)[0] > self.max_fraction:
            raise TooManyUnusableRecords(
                f"stopped: {self.skipped} of {self.read} {self.what} read could not be used "
                f"({100 * self.skipped / self.read:.1f}%, above the limit max_skipped_fraction={self.max_fraction}); "
                f"first: {self.notes[0]}")

    @property
    def fraction(self) -> float:
        return self.skipped / self.read if self.read else 0.0

    def summary(self) -> str:
        if not self.skipped:
            return f"all {self.read} {self.what} read were usable"
        names = "; ".join(self.notes[:3]) + (" ..." if len(self.notes) > 3 else "")
        return f"skipped {self.skipped} of {self.read} {self.what} read ({100 * self.fraction:.2f}%): {names}"

    def state(self) -> dict:
        return {"read": self.read, "skipped": self.skipped, "notes": list(self.notes)}

    def set_state(self, state: dict) -> None:
        self.read, self.skipped, self.notes = int(state["read"]), int(state["skipped"]), list(state["notes"])

    def merge(self, other: "SkipLog") -> "SkipLog":
        notes = self.notes + [n for n in other.notes if n not in self.notes]
        return SkipLog(self.max_fraction, self.what, self.read + other.read, self.skipped + other.skipped,
                       notes[:MAX_NOTES])

    def write(self, path: str | os.PathLike) -> None:
        """The run's summary of skipped records as JSON (`data_faults.json` in a run directory)."""
        with open(path, "w") as f:
            json.dump({"what": self.what, "read": self.read, "skipped": self.skipped, "fraction": self.fraction,
                       "max_skipped_fraction": self.max_fraction, "records": self.notes}, f, indent=2)
