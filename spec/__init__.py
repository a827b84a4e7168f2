"""ptspec.spec: the architecture and the contracts (see docs/interface.md). Imports nothing of impl."""
