"""ptspec.proofs: the checkers that show impl meets spec, and the `ptspec` command."""
__version__ = "0.1.0"
