"""Model registry, checkpoints and activations: what every stage that runs a network uses."""
