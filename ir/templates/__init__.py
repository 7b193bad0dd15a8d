"""Templates (whole networks) and blocks (insertable pieces)."""

from ir.templates import (  # noqa: F401  (registration)
    blocks,
    deform,
    inception,
    lenet,
    mobilenet,
    resnet,
    shufflenet,
    siamese,
    squeezenet,
    unet,
    vgg,
)
from ir.templates.builder import Builder
from ir.templates.registry import BLOCKS, TEMPLATES, Block, Template, build_template, insert_block

__all__ = ["Builder", "BLOCKS", "TEMPLATES", "Block", "Template", "build_template", "insert_block"]
