"""`python -m vit_pipeline` is the console script `vit-pipeline` (and what `accelerate launch -m vit_pipeline` runs)."""

from vit_pipeline.cli import main

if __name__ == "__main__":
    main()
