"""Single source of the package version (read by pyproject and every CLI)."""

__version__ = "0.1.0"
