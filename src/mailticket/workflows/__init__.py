"""Admin-defined YAML workflows: schema, loader, action registry and engine."""
