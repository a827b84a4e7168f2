"""ptspec.proofs: the checkers that show impl meets spec, and the `ptspec` command."""

