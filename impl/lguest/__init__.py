"""ptspec.impl.lguest: drivers/lguest/page_tables.c (Linux 4.7), x86 2-level and PAE, in Python.

``Lguest(fmt, variant=...)`` is one guest with its shadow pgdirs; see lguest.py for the API and
docs/lguest.md for the raw state it produces.
"""

from ptspec.impl.lguest.lguest import Lguest, SEED_FINDINGS, VARIANTS
from ptspec.impl.lguest.x86 import FORMATS, X86Format

__all__ = ["Lguest", "SEED_FINDINGS", "VARIANTS", "FORMATS", "X86Format"]
