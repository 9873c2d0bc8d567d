"""jaxnas: neural architecture search and dataset optimization in JAX."""

__version__ = "0.1.0"
