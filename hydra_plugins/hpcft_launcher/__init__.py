"""hpcft's Hydra launcher plugin (found by Hydra in the `hydra_plugins` namespace)."""
