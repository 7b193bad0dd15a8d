"""Templates (whole networks) and blocks (insertable pieces)."""

from convstudio.ir.templates import (  # noqa: F401  (registration)
    blocks,
    convnext,
    deform,
    densenet,
    efficientnet,
    inception,
    lenet,
    mobilenet,
    regnet,
    resnet,
    shufflenet,
    siamese,
    squeezenet,
    unet,
    vgg,
)
from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.registry import BLOCKS, TEMPLATES, Block, Template, build_template, insert_block

__all__ = ["Builder", "BLOCKS", "TEMPLATES", "Block", "Template", "build_template", "insert_block"]
