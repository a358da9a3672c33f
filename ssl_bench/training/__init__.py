"""Training layer: losses, ramps, EMA, augmentation, trainer, run folders and contract checks."""
