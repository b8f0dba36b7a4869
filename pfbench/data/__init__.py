"""Data stage: the embedded dataset, image folders, VAE latents, and what training reads."""

from __future__ import annotations

DATASETS = ("embedded", "imagenet", "captioned")
# "captioned": real images with a caption each and no classes (text-to-image; ``pfbench.data.prompts``): one
# class, "image", so label-keyed code (sample grids) has a name to print; metrics read the captions.


def class_names(dataset: str) -> tuple[str, ...]:
    """Class names in label order: the embedded shapes, ImageNet's 1000 classes (CLIP prompt names), or the one
    class of a captioned dataset."""
    if dataset == "captioned":
        return ("image",)
    if dataset == "embedded":
        from pfbench.data.embedded import CLASS_NAMES

        return CLASS_NAMES
    if dataset == "imagenet":
        # open_clip ships the 1000 names in label (sorted synset) order, as used for CLIP zero-shot prompts.
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        return tuple(IMAGENET_CLASSNAMES)
    from pfbench import PfbenchError

    raise PfbenchError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
