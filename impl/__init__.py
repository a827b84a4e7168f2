"""ptspec.impl: the kernel's page-table algorithms, faithfully. Imports nothing of spec."""
