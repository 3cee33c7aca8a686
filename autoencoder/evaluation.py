"""Held-out reconstruction quality: per-layer R² by prompt length, beside the mean-pool bound."""

from __future__ import annotations

import torch

from layerscan.autoencoder.cache import HiddenStateCache
from layerscan.autoencoder.capture.capture_file import layer_names
from layerscan.autoencoder.model import ParticleAutoencoder

EVAL_LENGTHS = (8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
GOAL_R2, GOAL_MAX_LEN = 0.95, 64
"""The quality goal: R² >= 0.95 at every layer for prompts up to 64 tokens."""


def r2_terms(
    hidden: torch.Tensor,
    reconstruction: torch.Tensor,
    mean: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch,) SSE and SST per row, the two sums of every R² = 1 - SSE / SST in layerscan.

    Args:
        hidden, reconstruction: (batch, n_tokens, d_model), in the dtype to sum in.
        mean: what SST is taken around (the layer's corpus mean), broadcast to `hidden`.
        mask: (batch, n_tokens) bool, the real tokens; None: all of them.
    """
    error, spread = reconstruction - hidden, hidden - mean  # (batch, n_tokens, d_model)
    if mask is not None:
        keep = mask[..., None].to(hidden.dtype)  # (batch, n_tokens, 1)
        error, spread = error * keep, spread * keep
    return error.pow(2).sum((1, 2)), spread.pow(2).sum((1, 2))


@torch.no_grad()
def evaluate(
    model: ParticleAutoencoder,
    cache: HiddenStateCache,
    indices: list[int],
    lengths: tuple[int, ...] = EVAL_LENGTHS,
    batch_windows: int = 4,
) -> dict:
    """R² = 1 - SSE/SST per layer, pooled over windows, for prompts cut to each length.

    SST is taken around the layer's corpus mean. The mean-pool bound is the R² of the best a
    pooled code can do: every token gets its prompt's mean state.

    Args:
        model: the autoencoder (eval mode is set here).
        cache: hidden states: a HiddenStateCache, or anything with its `windows` (each with
            a `length`), `window(i, length=n)` and `n_layers`.
        indices: windows to evaluate (held-out ones).
        lengths: prompt lengths; a window counts at length L if it has at least L tokens.

    Returns:
        JSON-able metrics: r2 / mean_pool_r2 per length (lists over layers), the worst layer
        up to 64 tokens, and whether the goal is met.
    """
    model.eval()
    device = model.mean.device
    n_layers = cache.n_layers
    lengths = tuple(n for n in lengths if n <= model.config.n_particles)
    layers = torch.arange(n_layers + 1, device=device)
    result: dict = {"lengths": [], "r2": {}, "mean_pool_r2": {}, "n_prompts": {}}
    for n in lengths:
        usable = [i for i in indices if cache.windows[i].length >= n]
        if not usable:
            continue
        sse = torch.zeros(n_layers + 1, dtype=torch.float64)
        sst, pooled = torch.zeros_like(sse), torch.zeros_like(sse)
        for start in range(0, len(usable), batch_windows):
            chunk = usable[start : start + batch_windows]
            hidden = torch.cat([torch.from_numpy(cache.window(i, length=n)) for i in chunk])
            hidden = hidden.to(device)  # (windows * (n_layers+1), n, d_model)
            layer = layers.repeat(len(chunk))  # (windows * (n_layers+1),)
            lens = torch.full_like(layer, n)
            recon = model(hidden, layer, lens).reconstruction  # (rows, n, d_model)
            hidden, mean = hidden.double(), model.mean[layer, None].double()
            row_sse, row_sst = r2_terms(hidden, recon.double(), mean)  # (rows,)
            prompt_mean = hidden.mean(1, keepdim=True).expand_as(hidden)  # (rows, n, d_model)
            row_pooled, _ = r2_terms(hidden, prompt_mean, mean)  # the mean-pool bound's SSE
            for total, per_row in zip(
                (sse, sst, pooled), (row_sse, row_sst, row_pooled), strict=True
            ):
                total += per_row.view(len(chunk), n_layers + 1).sum(0).cpu()
        result["lengths"].append(n)
        result["r2"][str(n)] = (1 - sse / sst).tolist()
        result["mean_pool_r2"][str(n)] = (1 - pooled / sst).tolist()
        result["n_prompts"][str(n)] = len(usable)
    upto = [min(result["r2"][str(n)]) for n in result["lengths"] if n <= GOAL_MAX_LEN]
    result["worst_r2_up_to_64"] = min(upto) if upto else None
    result["goal_met"] = bool(upto) and min(upto) >= GOAL_R2
    return result


def format_metrics(metrics: dict) -> str:
    """A table: one row per layer, per length 'R² (mean-pool R²)'."""
    lengths = metrics["lengths"]
    if not lengths:
        return "no held-out prompt to evaluate"
    n_layers = len(metrics["r2"][str(lengths[0])]) - 1
    names = layer_names(n_layers)
    header = f"{'layer':<12}" + "".join(f"{f'{n} tok':>16}" for n in lengths)
    lines = [
        "per-token reconstruction R² on held-out text (mean-pool bound in brackets)",
        header,
        f"{'prompts':<12}" + "".join(f"{metrics['n_prompts'][str(n)]:>16}" for n in lengths),
    ]
    for layer in range(n_layers + 1):
        cells = "".join(
            f"{metrics['r2'][str(n)][layer]:>9.3f} ({metrics['mean_pool_r2'][str(n)][layer]:.2f})"  # noqa: E501
            for n in lengths
        )
        lines.append(f"{names[layer]:<12}{cells}")
    worst = metrics.get("worst_r2_up_to_64")
    if worst is not None:
        verdict = "met" if metrics["goal_met"] else "NOT met"
        lines.append(
            f"worst layer up to {GOAL_MAX_LEN} tokens: R² = {worst:.3f} "
            f"(goal >= {GOAL_R2}: {verdict})"
        )
    return "\n".join(lines)
