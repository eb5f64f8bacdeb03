"""operator-service: the Compute-to-Data operator API for the Ocean Provider."""

__version__ = "0.1.0"
