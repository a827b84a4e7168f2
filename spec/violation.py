"""A broken invariant or contract, as reported to a reviewer.

Models: one finding: the id of what was broken ("S2-RC", "C-MAP" ...), a one-line message with
addresses in hex, and where it happened (table pa, index, level, ipa, descriptor, as available).
"""

from dataclasses import dataclass, field


@dataclass
class Violation:
    """One violation: ``str(v)`` is ``"<inv> <message>"``, e.g. ``S2-RC table 0x1000 at level 2: ...``."""
    inv: str
    message: str
    where: dict = field(default_factory=dict)

    def __str__(self):
        return f"{self.inv} {self.message}"
