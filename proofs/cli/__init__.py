"""The ``ptspec`` command."""
