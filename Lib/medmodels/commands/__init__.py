"""Sub-commands of the ``medmodels`` command line, one module per group."""
