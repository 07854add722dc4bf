"""`python -m pipeline` is the console script `vit-pipeline` (and what `accelerate launch -m pipeline` runs)."""

from pipeline.cli import main

if __name__ == "__main__":
    main()
