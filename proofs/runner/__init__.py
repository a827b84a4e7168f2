"""The obligation registry and the runner that keeps verdicts honest; budget profiles; shards and workers."""
