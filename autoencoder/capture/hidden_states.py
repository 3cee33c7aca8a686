"""Capture: run a transformer on a prompt and on the tokens it generates; keep every layer."""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch

from layerscan.autoencoder.capture.architectures import context_length, final_norm, lens_head
from layerscan.autoencoder.capture.attention import check_attention_supported, maybe_recording
from layerscan.autoencoder.capture.capture_file import (
    NORMALIZATIONS,
    Capture,
    CaptureOptions,
    Normalization,
)
from layerscan.autoencoder.capture.components import recording_components
from layerscan.autoencoder.capture.loading import LoadedModel
from layerscan.core.errors import LayerscanError, Notice

LENS_CHUNK_TOKENS = 256
"""Tokens per logit-lens matmul, to bound memory at (chunk, vocab)."""


@contextlib.contextmanager
def _final_norm_io(model) -> Iterator[dict]:
    """Record the input and output of the final norm on each forward pass."""
    seen: dict = {}
    try:
        norm = final_norm(model)
    except LayerscanError:  # unknown architecture: its last state is taken as transformers gives it
        norm = None
    if norm is None:
        yield seen
        return

    def hook(module, inputs, output):
        seen["input"], seen["output"] = inputs[0], output

    handle = norm.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


@functools.cache
def _takes_logits_to_keep(model_class: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


@torch.inference_mode()
def _forward_states(
    loaded: LoadedModel, input_ids: torch.Tensor, attention_mask=None, past_key_values=None
) -> tuple[torch.Tensor, object, torch.Tensor | None]:
    """One forward pass → raw residual states (n_layers+1, batch, tokens, d_model), cache, logits.

    transformers' last hidden state is, depending on the architecture, taken before or after
    the final norm. The final norm's own input and output are recorded on this very pass, so the
    last layer is always returned un-normed (raw), the same as every other layer.
    """
    model = loaded.model
    # only the last position's logits pick the next token
    kwargs = {"logits_to_keep": 1} if _takes_logits_to_keep(type(model)) else {}
    if past_key_values is not None:  # only when there is one: newer transformers warn on it
        kwargs["past_key_values"] = past_key_values
    with _final_norm_io(model) as seen:
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            use_cache=loaded.is_causal,
            output_hidden_states=True,
            **kwargs,
        )
    states = list(out.hidden_states)
    if (
        seen
        and states[-1].shape == seen["output"].shape
        and torch.equal(states[-1], seen["output"])
    ):
        states[-1] = seen["input"]  # the stack held the normed state: use the raw one
    device = states[0].device
    hidden = torch.stack([s.to(device) for s in states])  # (n_layers+1, batch, tokens, d_model)
    # newer transformers name the cache `cache` and warn when `past_key_values` is read
    cache = next((out[key] for key in ("cache", "past_key_values") if key in out), None)
    return hidden, cache, getattr(out, "logits", None)


@torch.inference_mode()
def normalize(
    loaded: LoadedModel, hidden: torch.Tensor, normalization: Normalization
) -> torch.Tensor:
    """Apply a normalization mode to raw states (n_layers+1, ..., d_model), as float32."""
    if normalization not in NORMALIZATIONS:
        raise LayerscanError(
            f"unknown normalization {normalization!r}: use {', '.join(NORMALIZATIONS)}"
        )
    if normalization == "final-norm":
        norm = final_norm(loaded.model)
        if norm is not None:
            weight = next(norm.parameters(), None)
            hidden = norm(hidden.to(weight.device if weight is not None else hidden.device))
        return hidden.float()
    hidden = hidden.float()
    if normalization == "standardize":  # per token and layer, over the hidden dimension
        mean = hidden.mean(dim=-1, keepdim=True)
        std = hidden.std(dim=-1, keepdim=True, unbiased=False)
        hidden = (hidden - mean) / (std + 1e-6)
    return hidden


def lens_logits_fn(loaded: LoadedModel) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """raw states (..., d_model) → logit-lens logits (..., vocab), or None without an LM head.

    The state goes through the model's final norm and LM head, exactly as the last layer does
    inside the model, so at the last layer the lens is the model's own output.

    Raises:
        LayerscanError: the final norm or the LM head of this architecture is not known.
    """
    head = lens_head(loaded.model)
    if head is None:
        return None
    final_norm(loaded.model)  # raises, naming an unknown architecture
    dtype = next(loaded.model.parameters()).dtype

    def logits(raw: torch.Tensor) -> torch.Tensor:
        return head(normalize(loaded, raw, "final-norm").to(dtype)).float()

    return logits


@torch.inference_mode()
def logit_lens(
    loaded: LoadedModel, raw: torch.Tensor, top_k: int, last: int = 0
) -> tuple[np.ndarray, np.ndarray] | None:
    """Top-k next tokens per layer and position from raw states (n_layers+1, tokens, d_model).

    Every layer goes through the model's final norm and LM head, as the logit lens does.
    Returns ids (n_layers+1, tokens, top_k) int64 and probabilities float32, or None (no LM
    head, top_k 0, or an architecture whose head is not known: then with a one-line Notice,
    never a wrong lens). With `last` > 0 only the last `last` positions are computed; the
    earlier ones hold id -1 and probability 0.
    """
    if top_k <= 0:
        return None
    try:
        lens = lens_logits_fn(loaded)
    except LayerscanError as exc:
        warnings.warn(f"logit lens off: {exc}", Notice, stacklevel=2)
        return None
    if lens is None:
        return None
    start = max(0, raw.shape[1] - last) if last else 0
    flat = raw[:, start:].reshape(-1, raw.shape[-1])  # (n_layers+1 * kept tokens, d_model)
    ids, probs = [], []
    for chunk in flat.split(LENS_CHUNK_TOKENS):
        # the top k of the probabilities are those of the logits; torch's softmax is
        # about 3x faster on CPU than the logsumexp that exp(logit - logsumexp) needs
        top = torch.softmax(lens(chunk), dim=-1).topk(top_k, dim=-1)  # (chunk, top_k)
        ids.append(top.indices.cpu())
        probs.append(top.values.cpu())
    shape = (raw.shape[0], raw.shape[1] - start, top_k)
    all_ids = np.full((*raw.shape[:2], top_k), -1, np.int64)
    all_probs = np.zeros((*raw.shape[:2], top_k), np.float32)
    all_ids[:, start:] = torch.cat(ids).reshape(shape).numpy()
    all_probs[:, start:] = torch.cat(probs).reshape(shape).numpy()
    return all_ids, all_probs


def _token_strings(tokenizer, ids) -> list:
    """Readable strings for token ids of any shape (nested lists); each distinct id decoded once,
    and "" for -1 (no token)."""
    ids = np.asarray(ids, dtype=np.int64)
    unique, inverse = np.unique(ids, return_inverse=True)
    strings = np.array([tokenizer.decode([int(i)]) if i >= 0 else "" for i in unique], dtype=object)
    return strings[inverse.reshape(ids.shape)].tolist()


def tokenize_prompt(
    loaded: LoadedModel, prompt: str, chat: bool = False, extra_tokens: int = 0
) -> list[int]:
    """Token ids of `prompt` (optionally in the chat template), checked against the context."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise LayerscanError("the prompt is empty; give some text to capture")
    tokenizer = loaded.tokenizer
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise LayerscanError(f"{loaded.model_id} has no chat template; drop --chat")
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(prompt)["input_ids"]
    check_length(
        len(ids),
        extra_tokens,
        context_length(loaded.config, tokenizer),
        f"the context of {loaded.model_id}",
    )
    return list(ids)


def check_length(n_prompt: int, n_generate: int, limit: int | None, whose: str) -> None:
    """Raise a one-line LayerscanError when prompt + generated tokens exceed `limit`.

    Args:
        n_prompt: prompt tokens.
        n_generate: tokens to generate (--generate); named in the message only when > 0.
        limit: the most tokens allowed (None: no limit).
        whose: what sets the limit, e.g. "the context of gpt2".
    """
    if limit is None or n_prompt + n_generate <= limit:
        return
    what = f"the prompt has {n_prompt} tokens" + (
        f" + {n_generate} to generate (--generate)" if n_generate else ""
    )
    fix = "shorten the prompt or --generate less" if n_generate else "shorten the prompt"
    raise LayerscanError(
        f"{what}, which exceed {whose} ({limit} tokens); {fix} (layerscan never truncates silently)"
    )


def prompt_ids(
    loaded: LoadedModel,
    prompt: str,
    options: CaptureOptions,
    max_tokens: int | None = None,
    whose: str = "",
) -> list[int]:
    """Tokenize `prompt` as `capture` does and check every limit before any forward pass.

    Args:
        max_tokens: a further limit on prompt + generated tokens, e.g. an autoencoder's
            max_len, set by `whose` (said in the error).

    Returns:
        The prompt's token ids, to pass to `capture` so it does not tokenize again.
    """
    check_capture_options(loaded, options)
    ids = tokenize_prompt(loaded, prompt, chat=options.chat)
    context = context_length(loaded.config, loaded.tokenizer)
    limits = [(max_tokens, whose), (context, f"the context of {loaded.model_id}")]
    for limit, who in sorted((pair for pair in limits if pair[0] is not None), key=lambda p: p[0]):
        check_length(len(ids), options.generate, limit, who)  # the lower limit is the one cited
    return ids


def _next_token(
    logits: torch.Tensor, sample: bool, temperature: float, generator: torch.Generator
) -> int:
    if not sample:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / max(temperature, 1e-5), dim=-1).cpu()
    return int(torch.multinomial(probs, 1, generator=generator))


def check_capture_options(loaded: LoadedModel, options: CaptureOptions) -> None:
    """Raise a one-line LayerscanError for options this model cannot honour (before any pass)."""
    if options.generate and not loaded.is_causal:
        raise LayerscanError(f"{loaded.model_id} is not a causal LM; it cannot --generate")
    vocab = getattr(loaded.config, "vocab_size", None)
    if vocab is not None and options.top_k > vocab:
        raise LayerscanError(
            f"--top-k {options.top_k} exceeds the vocabulary of "
            f"{loaded.model_id} ({vocab} tokens); use at most {vocab}"
        )
    if options.normalization == "final-norm":
        final_norm(loaded.model)  # fail early, naming an unknown architecture
    if options.attention:
        check_attention_supported(loaded.model)


@torch.inference_mode()
def capture(
    loaded: LoadedModel,
    prompt: str,
    options: CaptureOptions | None = None,
    *,
    token_ids: list[int] | None = None,
    **overrides: Any,
) -> Capture:
    """Hidden states of every layer for `prompt` and for generated continuation tokens.

    The prompt runs in ONE forward pass: under causal attention the states of every prefix are
    the first positions of that pass, so token-time costs nothing extra. Generated tokens reuse
    the KV cache and never recompute the prompt.

    Args:
        loaded: from `load_model`.
        prompt: the text; empty or whitespace-only is an error.
        options: normalization, generation and logit lens (see CaptureOptions).
        token_ids: the prompt's ids from `prompt_ids` (checked there), or None to tokenize here.
        **overrides: CaptureOptions fields to change, e.g. `top_k=0`.
    """
    options = replace(options or CaptureOptions(), **overrides)
    normalization, generate, top_k = options.normalization, options.generate, options.top_k
    ids = prompt_ids(loaded, prompt, options) if token_ids is None else list(token_ids)
    device = loaded.model.device if hasattr(loaded.model, "device") else loaded.device
    input_ids = torch.tensor([ids], device=device)
    components_recorder = recording_components(loaded, options.components)
    # attention: None without --attention
    with maybe_recording(loaded.model, options) as recorder, components_recorder:
        hidden, past, logits = _forward_states(loaded, input_ids)  # (n_layers+1, 1, T, d_model)
        steps = [hidden[:, 0]]
        generator = torch.Generator().manual_seed(options.seed)
        all_ids = list(ids)
        for _ in range(generate):
            token = _next_token(logits[0, -1], options.sample, options.temperature, generator)
            all_ids.append(token)
            step_hidden, past, logits = _forward_states(
                loaded, torch.tensor([[token]], device=device), past_key_values=past
            )
            steps.append(step_hidden[:, 0])  # (n_layers+1, 1, d_model)
    raw = torch.cat(steps, dim=1)  # (n_layers+1, n_tokens, d_model)
    components = components_recorder.finish(raw, all_ids, len(ids)) if options.components else None
    lens = logit_lens(loaded, raw, top_k, options.lens_last)
    tokens = _token_strings(loaded.tokenizer, all_ids)
    result = Capture(
        hidden=normalize(loaded, raw, normalization).cpu().numpy(),
        token_ids=all_ids,
        tokens=tokens,
        n_prompt_tokens=len(ids),
        model_id=loaded.model_id,
        revision=loaded.revision,
        architecture=loaded.architecture,
        normalization=normalization,
        is_causal=loaded.is_causal,
        prompt=prompt,
        lens_ids=None if lens is None else lens[0],
        lens_probs=None if lens is None else lens[1],
        lens_tokens=None if lens is None else _token_strings(loaded.tokenizer, lens[0]),
        extra={k: v for k, v in asdict(options).items() if k != "normalization"},
        attention=None if recorder is None else recorder.record(options.attention_all),
        components=components,
    )
    result.validate()
    return result


@torch.inference_mode()
def hidden_states_batch(
    loaded: LoadedModel, batch_ids: list[list[int]], normalization: Normalization = "final-norm"
) -> list[np.ndarray]:
    """States of several token sequences in one padded forward pass (for corpus extraction).

    Returns one (n_layers+1, len(ids), d_model) float32 array per sequence. Sequences are
    right-padded and masked, so each result equals that sequence's own forward pass.
    """
    if not batch_ids or any(len(ids) == 0 for ids in batch_ids):
        raise LayerscanError("hidden_states_batch needs non-empty token sequences")
    longest = max(len(ids) for ids in batch_ids)
    pad = loaded.tokenizer.pad_token_id
    pad = 0 if pad is None else pad
    device = loaded.model.device if hasattr(loaded.model, "device") else loaded.device
    input_ids = torch.full((len(batch_ids), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(batch_ids), longest), dtype=torch.long)
    for row, ids in enumerate(batch_ids):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
    hidden, _, _ = _forward_states(loaded, input_ids.to(device), attention_mask=mask.to(device))
    hidden = normalize(loaded, hidden, normalization).cpu()  # (n_layers+1, B, T, d_model)
    return [hidden[:, row, : len(ids)].numpy() for row, ids in enumerate(batch_ids)]
