"""The run directory: record store, atomic writes, lock, overwrite rules, provenance, the tolerant reader."""
