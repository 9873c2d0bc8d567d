"""Hypergradients on the bilevel engine: estimators (``estimators.py``)."""
