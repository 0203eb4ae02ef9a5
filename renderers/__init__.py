"""Pure renderers: data in, bytes out. No database, no network, no environment."""
