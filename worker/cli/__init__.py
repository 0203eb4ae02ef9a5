"""The ``campaign-dispatch`` command line: one module per command group."""
