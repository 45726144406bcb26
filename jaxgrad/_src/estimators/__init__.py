"""Estimator transformations, one module per family; see ``registry``."""
