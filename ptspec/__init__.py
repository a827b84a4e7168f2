"""ptspec: an executable, machine-checked reference for hypervisor page-table code.

The three layers live at the top of the repository and install under this one name:

- ``ptspec.spec`` (folder ``spec/``): what must be true -- the architecture, the invariants and the
  operation contracts, as statements with ids. Trusted; imports only the standard library.
- ``ptspec.impl`` (folder ``impl/``): how the kernel does it -- pgtable.c, mmu.c and lguest's
  page_tables.c, faithfully, in Python. Checked; imports only the standard library.
- ``ptspec.proofs`` (folder ``proofs/``): why the one meets the other -- the engines (z3, CrossHair,
  hypothesis, exhaustive), one folder per area, the kernel-C work, mutation testing, reports and
  the ``ptspec`` command.

spec and impl never import each other; proofs takes its inputs from spec.
"""

__version__ = "0.1.0"
