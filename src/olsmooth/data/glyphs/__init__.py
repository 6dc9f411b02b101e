"""Printed-character datasets rendered from font files: charsets, font discovery and design groups, rendering and
augmentation, and the builder that writes an array folder with its manifest (docs/datasets.md, glyphs)."""

from .build import FORMAT, GlyphOptions, GlyphPlan, build_glyph_dataset, glyph_options, plan_glyph_dataset
from .charsets import CHARSETS, charset_chars, choose_classes
from .fonts import FontFace, design_group

__all__ = ["CHARSETS", "FORMAT", "FontFace", "GlyphOptions", "GlyphPlan", "build_glyph_dataset", "charset_chars",
           "choose_classes", "design_group", "glyph_options", "plan_glyph_dataset"]
