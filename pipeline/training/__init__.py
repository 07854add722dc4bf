"""Training: the Trainer backend, the Accelerate backend, what both share, optimizer groups, loss, EMA."""
