"""ELECTRA in JAX/Flax."""
