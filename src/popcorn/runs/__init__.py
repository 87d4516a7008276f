"""The run store: one folder per query run, the place every stage reads and writes."""

from popcorn.runs.store import SCHEMA_VERSION, Run, RunManifest, RunStore

__all__ = ["SCHEMA_VERSION", "Run", "RunManifest", "RunStore"]
