"""V-JEPA 2 in JAX."""
