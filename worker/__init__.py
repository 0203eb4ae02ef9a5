"""The campaign-dispatch service: CLI, settings, broker wiring and actors."""
