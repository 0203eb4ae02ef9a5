"""Runtime: settings, logging, broker wiring, process supervision. Imports nothing else of worker/."""
