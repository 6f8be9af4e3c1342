"""How many faulty validators a t-of-n validator set tolerates, and what to warn about.

From docs/consensus.md ("Safety", "Liveness"):

- **safety**: two certificates for conflicting decisions of one slot need 2t partials
  among n shares, so at least `2t - n` validators signed both. Honest validators never
  do, so the set tolerates `2t - n - 1` Byzantine (equivocating) validators;
- **liveness**: a decision needs t validators that follow the rules, so up to `n - t`
  may be offline, partitioned away, stalled or Byzantine;
- **BFT**: f Byzantine validators are tolerated for both when `f <= 2t - n - 1` and
  `f <= n - t`. The most any t allows is `f = (n - 1) // 3` (n >= 3f + 1), reached by the
  thresholds `ceil((n + f + 1) / 2) .. n - f`; for n = 3f + 1 that is t = 2f + 1 exactly.
  `t >= 2f + 1` alone is not enough when n is not 3f + 1: n = 5, t = 3 meets it for
  f = 1 but `2t - n - 1 = 0`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Tolerance:
    """The fault tolerance of `t`-of-`n` validators (a majority: n/2 < t <= n)."""

    n: int
    t: int

    def __post_init__(self) -> None:
        if type(self.n) is not int or type(self.t) is not int or not self.n / 2 < self.t <= self.n:
            raise ValueError(f"t = {self.t!r} of n = {self.n!r} is not a majority threshold")

    @property
    def offline(self) -> int:
        """Validators that may be down or unreachable while critical steps still commit."""
        return self.n - self.t

    @property
    def conflicting(self) -> int:
        """Byzantine validators tolerated before conflicting decisions can be certified."""
        return 2 * self.t - self.n - 1

    @property
    def byzantine(self) -> int:
        """f: Byzantine validators tolerated for both safety and liveness."""
        return min(self.offline, self.conflicting)

    @property
    def best_byzantine(self) -> int:
        """The largest f any threshold gives n validators (n >= 3f + 1)."""
        return (self.n - 1) // 3

    @property
    def best_thresholds(self) -> range:
        """The thresholds that reach `best_byzantine` (for n = 3f + 1: t = 2f + 1 only)."""
        f = self.best_byzantine
        return range((self.n + f + 2) // 2, self.n - f + 1)

    @property
    def meets_2f_plus_1(self) -> bool:
        """t >= 2f + 1 for f = (n - 1) // 3: the classic BFT rule (exact for n = 3f + 1)."""
        return self.t >= 2 * self.best_byzantine + 1

    @property
    def optimal(self) -> bool:
        return self.byzantine == self.best_byzantine

    def warnings(self) -> list[str]:
        """What an operator choosing this t for n should know, worst first."""
        found = []
        if self.conflicting == 0:
            found.append(
                f"2t - n - 1 = 0: no Byzantine validator is tolerated; one validator that"
                f" signs two conflicting decisions can, with a lying coordinator, certify"
                f" both (t = {self.t} of n = {self.n} is safe against crashes, partitions"
                f" and lying coordinators only)"
            )
        if self.offline == 0:
            found.append(
                f"t = n = {self.n}: a single validator down or unreachable stops every"
                " critical step"
            )
        if not self.optimal:
            found.append(
                f"t = {self.t} tolerates f = {self.byzantine} Byzantine validator(s);"
                f" {self._best_text()}"
            )
        return found

    def summary(self) -> list[str]:
        """Human lines for `qflow subnet create|show`."""
        best = f"the most n = {self.n} allows" if self.optimal else self._best_text()
        return [
            f"fault tolerance (t = {self.t} of n = {self.n} validators):",
            f"  liveness: up to {self.offline} validator(s) may be down, unreachable or"
            " silent (n - t)",
            f"  safety: conflicting decisions need {self.conflicting + 1} validator(s) to"
            f" sign both; up to {self.conflicting} Byzantine tolerated (2t - n - 1)",
            f"  bft: f = {self.byzantine} Byzantine validator(s) tolerated for both ({best})",
        ]

    def _best_text(self) -> str:
        ts = self.best_thresholds
        choice = f"t = {ts[0]}" if len(ts) == 1 else f"t = {ts[0]}..{ts[-1]}"
        return f"n = {self.n} allows f = {self.best_byzantine}, with {choice}"

    def to_obj(self) -> dict[str, Any]:
        """The JSON form (`qflow subnet show --json`)."""
        return {
            "n": self.n,
            "t": self.t,
            "offline": self.offline,
            "conflicting": self.conflicting,
            "byzantine": self.byzantine,
            "best_byzantine": self.best_byzantine,
            "best_thresholds": list(self.best_thresholds),
            "meets_2f_plus_1": self.meets_2f_plus_1,
            "warnings": self.warnings(),
        }


def keeping_tolerance(old: Tolerance, size: int) -> int:
    """The smallest majority threshold for `size` validators that tolerates at least as
    many Byzantine validators as `old` (never lowers f; `size` >= old.n)."""
    for t in range(size // 2 + 1, size + 1):
        if Tolerance(size, t).byzantine >= min(old.byzantine, (size - 1) // 3):
            return t
    return size
