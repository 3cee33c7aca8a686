"""--components: what each block's attention and MLP write into the residual stream, per token.

Forward hooks on the modules the architecture table names (`RESIDUAL_WRITES`) keep their
outputs during the capture's own passes (the prompt, then one per generated token, with the KV
cache), so the writes add up to exactly the captured stream: h_l - h_(l-1) = a + m. The KV
cache is measured as it grows. How each token's attention splits between the prompt, earlier
generated tokens and itself needs attention weights, which sdpa/flash attention do not give:
after the capture, ONE eager replay of the whole sequence takes them (hooks reduce each layer's
weights to three numbers per token at once, so no (tokens x tokens) map is kept).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import numpy as np
import torch

from layerscan.autoencoder.capture.architectures import (
    attention_weight_modules,
    residual_write_modules,
)
from layerscan.autoencoder.capture.component_record import SPLIT_PARTS, Components
from layerscan.autoencoder.capture.loading import LoadedModel
from layerscan.core.errors import LayerscanError


def _cache_size(cache) -> tuple[int, int] | None:
    """(positions, bytes of keys and values) held by a transformers cache, or None."""
    layers = getattr(cache, "layers", None)
    if not layers:
        return None
    total = 0
    for layer in layers:
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if torch.is_tensor(tensor):
                total += tensor.numel() * tensor.element_size()
    return int(cache.get_seq_length()), total


def _write(output, args, kwargs, adds_residual: bool) -> torch.Tensor:
    """What a hooked module adds to the residual stream: its output (minus the residual it was
    given, for modules that add it themselves), cloned (Falcon adds to its MLP's output in
    place)."""
    out = output[0] if isinstance(output, tuple) else output
    if adds_residual:
        residual = args[1] if len(args) > 1 else kwargs["residual"]
        return out - residual
    return out.clone()


class ComponentRecorder:
    """Hooks that keep every block's attention and MLP writes over a capture's passes.

    Use as a context manager around the passes, then call `finish` with the captured stream.
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.attention, self.mlp, self.parallel = residual_write_modules(loaded.model)
        n_layers = len(self.attention)
        self.writes: dict[str, list[list[torch.Tensor]]] = {
            "attention": [[] for _ in range(n_layers)],
            "mlp": [[] for _ in range(n_layers)],
        }
        self.cache_sizes: list[tuple[int, int, int]] = []  # (new tokens, positions, bytes)
        self._handles: list = []

    def _hook(self, kind: str, layer: int, adds_residual: bool):
        def hook(module, args, kwargs, output):
            write = _write(output, args, kwargs, adds_residual)
            self.writes[kind][layer].append(write.reshape(-1, write.shape[-1]))  # (T, d_model)

        return hook

    def _cache_hook(self, module, args, kwargs, output) -> None:
        """After the last block's attention, every layer's cache holds this pass's tokens."""
        caches = [v for v in kwargs.values() if hasattr(v, "get_seq_length")]
        size = _cache_size(caches[0]) if caches else None
        if size is not None:
            new = (output[0] if isinstance(output, tuple) else output).shape[-2]
            self.cache_sizes.append((new, *size))

    def __enter__(self) -> ComponentRecorder:
        for kind, modules in (("attention", self.attention), ("mlp", self.mlp)):
            for layer, (module, adds) in enumerate(modules):
                self._handles.append(
                    module.register_forward_hook(self._hook(kind, layer, adds), with_kwargs=True)
                )
        last = attention_weight_modules(self.loaded.model)[-1]
        self._handles.append(last.register_forward_hook(self._cache_hook, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The writes of every pass: attention, MLP, each (n_layers, n_tokens, d_model)."""
        return tuple(
            torch.stack([torch.cat(parts) for parts in self.writes[kind]])
            for kind in ("attention", "mlp")
        )

    @torch.inference_mode()
    def finish(self, raw: torch.Tensor, token_ids: list[int], n_prompt: int) -> Components:
        """The record, from the captured raw stream (n_layers+1, n_tokens, d_model).

        Runs the eager replay for the attention split (after the hooks are removed).
        """
        attention, mlp = (w.float() for w in self.stacked())  # (n_layers, n_tokens, d_model)
        hidden = raw.float().to(attention.device)
        update = hidden[1:] - hidden[:-1]  # (n_layers, n_tokens, d_model)
        squared = (update * update).sum(-1).clamp_min(1e-30)  # (n_layers, n_tokens)
        error = (update - attention - mlp).abs().max() / update.abs().max().clamp_min(1e-30)
        start = time.perf_counter()
        split = attention_split(self.loaded, token_ids, n_prompt)
        replay = time.perf_counter() - start
        kv_tokens, kv_bytes = self._kv(len(token_ids), n_prompt)
        numpy = lambda t: t.cpu().numpy().astype(np.float32)  # noqa: E731
        return Components(
            attention_write=numpy(attention.norm(dim=-1)),
            mlp_write=numpy(mlp.norm(dim=-1)),
            update=numpy(squared.sqrt()),
            attention_share=numpy((attention * update).sum(-1) / squared),
            mlp_share=numpy((mlp * update).sum(-1) / squared),
            attention_split=split,
            kv_tokens=kv_tokens,
            kv_bytes=kv_bytes,
            parallel=self.parallel,
            residual_error=float(error),
            replay_seconds=replay,
        )

    def _kv(self, n_tokens: int, n_prompt: int) -> tuple[np.ndarray, np.ndarray]:
        """KV cache positions and bytes after each token: measured after every generation step;
        within the prompt's one pass, token t has added t+1 positions of equal size."""
        tokens = np.arange(1, n_tokens + 1, dtype=np.int64)
        sizes = np.zeros(n_tokens, np.int64)
        if not self.cache_sizes:  # a model without a cache object: positions only
            return tokens, sizes
        done = 0
        for new, positions, total in self.cache_sizes:
            per_position = total / max(positions, 1)
            rows = slice(done, done + new)
            tokens[rows] = positions - new + np.arange(1, new + 1)
            sizes[rows] = np.round(per_position * tokens[rows]).astype(np.int64)
            sizes[done + new - 1] = total  # the measured size itself
            done += new
        return tokens, sizes


@contextlib.contextmanager
def eager_attention(model) -> Iterator[None]:
    """Run the block with the model's eager attention (the one that returns weights)."""
    before = getattr(model.config, "_attn_implementation", None)
    if before in (None, "eager"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


@torch.inference_mode()
def attention_split(loaded: LoadedModel, token_ids: list[int], n_prompt: int) -> np.ndarray:
    """Each token's head-mean attention mass on prompt tokens, earlier generated tokens and
    itself, per layer: (n_layers, n_tokens, 3) float32, from one eager pass of the sequence."""
    model = loaded.model
    modules = attention_weight_modules(model)
    n_tokens = len(token_ids)
    keys = torch.arange(n_tokens)
    prompt_keys = (keys[None, :] < n_prompt) & (keys[None, :] != keys[:, None])  # (T, T)
    generated_keys = (keys[None, :] >= n_prompt) & (keys[None, :] < keys[:, None])
    parts = [prompt_keys.float(), generated_keys.float()]
    split = np.zeros((len(modules), n_tokens, len(SPLIT_PARTS)), np.float32)

    def hook(layer):
        def reduce(module, args, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if not torch.is_tensor(weights):
                return
            mean = weights[0].float().mean(0).cpu()  # (T, T) over heads
            for part, mask in enumerate(parts):
                split[layer, :, part] = (mean * mask).sum(-1).numpy()
            split[layer, :, 2] = mean.diagonal().numpy()

        return reduce

    handles = [m.register_forward_hook(hook(layer)) for layer, m in enumerate(modules)]
    device = model.device if hasattr(model, "device") else loaded.device
    try:
        with eager_attention(model):
            model(input_ids=torch.tensor([token_ids], device=device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    seen = split.sum(-1)
    if not np.allclose(seen, 1.0, atol=1e-3):
        raise LayerscanError(
            f"--components: the eager replay of {type(model).__name__} gave no attention "
            f"weights for every layer; drop --components"
        )
    return split


def recording_components(loaded: LoadedModel, wanted: bool):
    """A ComponentRecorder when `wanted` (checked against the table now), else a no-op."""
    return ComponentRecorder(loaded) if wanted else contextlib.nullcontext()
