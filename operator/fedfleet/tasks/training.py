"""A plain supervised training loop that built-in and user tasks can share.

It adds FedProx's proximal term when the round asks for it, so tasks get FedProx for free.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, TensorDataset

from fedfleet.tasks.base import TrainContext

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def proximal_anchors(params: dict[str, torch.nn.Parameter], ctx: TrainContext) -> dict[str, torch.Tensor]:
    """The global values FedProx pulls `params` towards; empty when the round asks for no pull."""
    if ctx.proximal_mu <= 0:
        return {}
    return {name: ctx.global_weights[name].to(ctx.device) for name in params if name in ctx.global_weights}


def proximal_term(
    params: dict[str, torch.nn.Parameter], anchors: dict[str, torch.Tensor], mu: float
) -> torch.Tensor:
    """FedProx's mu/2 * ||w - w_global||^2 over the anchored parameters."""
    return mu / 2 * torch.stack([torch.sum((params[n] - anchor) ** 2) for n, anchor in anchors.items()]).sum()


def train_epochs(
    model: torch.nn.Module,
    dataset: TensorDataset,
    ctx: TrainContext,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    loss_fn: LossFn,
) -> float:
    """SGD with momentum over `dataset`; returns the mean training loss of the last epoch."""
    generator = torch.Generator().manual_seed(ctx.seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9)
    params = dict(model.named_parameters())
    anchors = proximal_anchors(params, ctx)
    model.train()
    last_loss = 0.0
    for _ in range(epochs):
        total, seen = 0.0, 0
        for batch_features, batch_labels in loader:
            features, labels = batch_features.to(ctx.device), batch_labels.to(ctx.device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(features), labels)
            total += float(loss.detach()) * len(labels)
            seen += len(labels)
            if anchors:
                loss = loss + proximal_term(params, anchors, ctx.proximal_mu)
            loss.backward()
            optimizer.step()
        last_loss = total / max(seen, 1)
    return last_loss


@torch.no_grad()
def evaluate_classifier(
    model: torch.nn.Module, dataset: TensorDataset, device: torch.device, loss_fn: LossFn
) -> tuple[int, dict[str, float]]:
    model.eval()
    features, labels = (t.to(device) for t in dataset.tensors)
    logits = model(features)
    loss = float(loss_fn(logits, labels))
    accuracy = float((logits.argmax(dim=1) == labels).float().mean())
    return len(labels), {"loss": loss, "accuracy": accuracy}
