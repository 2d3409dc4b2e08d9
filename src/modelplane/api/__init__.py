"""HTTP routes: one thin module per capability; errors mapped in one place."""
