"""Model: load the checkpoint with the dataset's labels, inspect it, change its resolution, LoRA.

Knows nothing of training, evaluation, publishing or commands.
"""
