"""Compression strategies, one file each; `STRATEGIES` is the table (name -> Strategy)."""

from convstudio.ir.passes.compress import bottleneck, group_shuffle, lowrank, pool, prune, separable, stack3x3, stride2, width
from convstudio.ir.passes.compress.common import Strategy, parse_param_text

STRATEGIES: dict[str, Strategy] = {
    module.STRATEGY.name: module.STRATEGY
    for module in (stack3x3, separable, group_shuffle, stride2, pool, width, bottleneck, prune, lowrank)
}

__all__ = ["STRATEGIES", "Strategy", "parse_param_text"]
