"""Low-level helpers with no knowledge of the gate: atomic writes, hashing, strict JSON, paths,
progress lines. Everything else may import from here; nothing here imports the rest."""
