"""Prompt templates for textual inversion; "{}" stands for the learned tokens S*_m."""

# The standard object templates of textual inversion (Gal et al. 2022; diffusers'
# examples/textual_inversion/textual_inversion.py).
OBJECT_TEMPLATES = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
)

# The art-domain templates of Haviv et al. 2024, Appendix E.2 (the paper says 20;
# its text lists these 18).
ART_TEMPLATES = (
    "a detailed image of the artwork titled {}",
    "a high-resolution photo of the artwork {}",
    "a close-up view of the artwork known as {}",
    "a digital representation of the art piece {}",
    "the famous artwork {}",
    "a full view of the art piece titled {}",
    "an artistic interpretation of {}",
    "a gallery display of the artwork {}",
    "a photographic capture of the art {}",
    "the artwork {} in full detail",
    "a visual study of the artwork {}",
    "the complete artwork known as {}",
    "an exhibition view of {}",
    "a curated image of the artwork {}",
    "a detailed scan of {}",
    "an artistic rendering of {}",
    "a high-quality image of the artwork {}",
    "the full artwork titled {}",
)
