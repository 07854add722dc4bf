"""Data: load the splits, the built-in digits, decoding, transforms, augmentation, the pixel cache, the collator.

Knows nothing of training, evaluation, publishing or commands.
"""
