"""Reference softmax + cross-entropy loss (log_softmax, mean over the batch) and its backward."""
from __future__ import annotations

import torch

from ._common import f32


def softmax_loss(logits, labels):
    """(mean loss, prob), both fp32: the probabilities feed the backward and stay at full precision."""
    logp = torch.log_softmax(f32(logits), dim=1)
    loss = -logp.gather(1, labels.long().view(-1, 1)).mean()
    return loss, logp.exp()


def softmax_loss_backward(prob, labels, dloss=1.0):
    """(prob - onehot) * dloss / N; `dloss` a number or a 0-d tensor."""
    N = prob.shape[0]
    g = f32(prob).clone()
    g[torch.arange(N, device=prob.device), labels.long()] -= 1.0
    if isinstance(dloss, torch.Tensor):
        dloss = f32(dloss).to(prob.device)
    return g.mul_(dloss / N).to(prob.dtype)
