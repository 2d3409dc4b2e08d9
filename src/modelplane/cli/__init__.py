"""The ``modelplane`` command line (Typer + Rich)."""
