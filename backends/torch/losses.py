"""Losses of the training section, the L1 penalty, and the accuracy each loss reports."""

from __future__ import annotations

import torch
from torch import nn


def make_loss(name: str, margin: float = 1.0) -> nn.Module:
    """The torch criterion for a training-section loss name."""
    table = {
        "cross_entropy": lambda: nn.CrossEntropyLoss(),
        "bce": lambda: nn.BCEWithLogitsLoss(),
        "l1": lambda: nn.L1Loss(),
        "mse": lambda: nn.MSELoss(),
        "smooth_l1": lambda: nn.SmoothL1Loss(),
        "triplet": lambda: nn.TripletMarginLoss(margin=margin),
    }
    return table[name]()


def l1_penalty(module: nn.Module) -> torch.Tensor:
    """Sum of absolute values of every learnable parameter."""
    return sum(p.abs().sum() for p in module.parameters() if p.requires_grad)


def class_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of samples classified right: argmax over classes, or logit > 0 for one binary output."""
    if logits.ndim == 2 and logits.shape[1] == 1:
        predicted = (logits[:, 0] > 0).long()
    else:
        predicted = logits.argmax(dim=1)
    return (predicted == labels).float().mean().item()


def nearest_centroid_accuracy(train_emb: torch.Tensor, train_labels: torch.Tensor, emb: torch.Tensor, labels: torch.Tensor) -> float:
    """Classify embeddings by the nearest class centroid of the training embeddings."""
    classes = torch.unique(train_labels)
    centroids = torch.stack([train_emb[train_labels == c].mean(dim=0) for c in classes])
    nearest = classes[torch.cdist(emb.flatten(1), centroids.flatten(1)).argmin(dim=1)]
    return (nearest == labels).float().mean().item()
