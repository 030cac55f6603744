"""Sources: turn bytes from the outside world into points."""
