"""vit-pipeline: fine-tune Vision Transformers for image classification from one YAML recipe."""

__version__ = "0.1.0"


class PipelineError(Exception):
    """A problem the user can fix (bad recipe, missing column, unreadable image, ...).

    The command line prints it as one line and exits with `exit_code` (2; a run stopped by a signal uses 130 / 143);
    nothing already on disk is touched.
    """

    exit_code: int = 2
