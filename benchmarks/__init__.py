"""Speed of the template against plain PyTorch; ``python -m benchmarks`` runs every script."""
