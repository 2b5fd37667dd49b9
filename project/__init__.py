"""A PyTorch Lightning template for image classification."""
