"""olsmooth.engine."""
