"""vit-pipeline: fine-tune Vision Transformers for image classification from one YAML recipe."""

__version__ = "0.1.0"


class PipelineError(Exception):
    """A problem the user can fix (bad recipe, missing column, unreadable image, ...).

    The command line prints it as one line and exits non-zero; nothing already on disk is touched.
    """
