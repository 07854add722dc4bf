"""Model card templates (Jinja), rendered by `pipeline.card.render_card` through huggingface_hub's `ModelCard`."""
