"""Publishing: the model card, the push to the Hub, checkpoint pushes. No torch at module level."""
