"""The particle autoencoder: one layer's hidden states of any length <-> a fixed particle cloud.

Design (one model for every layer, lengths 1..n_particles, particle i is the same slot
everywhere):

* Routing. Particle i sits at relative position (i + 0.5) / N along the prompt, so a prompt of
  n_tokens tokens gives each token a contiguous block of about N / n_tokens particles (more
  particles per token for short prompts, fewer for long ones). Within its block, the particle
  of rank r carries the token's r-th block of d_particle coordinates.
* One coordinate system per layer. Every particle of a token sits at the token's first block
  (its top d_particle principal coordinates, the same directions for every token) plus
  `detail_scale` times its own block: so all particles of a layer share one space, a token's
  particles form a compact group around its main coordinates, and close means similar. Ranks
  beyond n_ranks repeat as blends of two neighbouring blocks, so no two particles coincide.
* Encoder. Each token's normalized state is written in the layer's orthonormal basis, most
  important direction first: the PCA of the layer's mix (hat functions) of n_anchors
  covariances, each the corpus covariance of a group of layers, so the bases turn smoothly
  from layer to layer. A token's code depends on its own state only (prefixes share codes).
* Decoder. Every token gathers the coordinates its particles hold. When it holds all of
  them (prompts up to n_particles / n_ranks tokens: 56 for the default) the inverse is exact.
  When the prompt is longer, the missing coordinates are predicted by a trained network
  from the ones held, the prompt's mean code, the token's position, the prompt length and
  the layer. Every token is reconstructed, not a pooled vector. The network is trained on
  prompts up to max_len tokens; a longer prompt (up to n_particles, one particle a token)
  uses the last trained position.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
from torch import nn

from layerscan.autoencoder.config import ModelConfig


class AutoencoderOutput(NamedTuple):
    """What `ParticleAutoencoder.forward` returns."""

    clouds: torch.Tensor
    """(batch, n_particles, d_particle) the particle clouds."""
    reconstruction: torch.Tensor
    """(batch, n_tokens, d_model) reconstructed hidden states, zero at padded positions."""


class Routing(NamedTuple):
    """Which token and rank each particle holds for one prompt length n, and back."""

    token: torch.Tensor
    """(n_particles,) int64, token of each particle (contiguous blocks, in prompt order)."""
    rank: torch.Tensor
    """(n_particles,) int64, its rank (mod n_ranks) in the token's block."""
    repeat: torch.Tensor
    """(n_particles,) int64, how many times that rank came before in the block."""
    particle: torch.Tensor
    """(n, n_ranks) int64, particle holding (token, rank), or n_particles (an always-zero
    slot) where the token has fewer particles than ranks."""


@functools.lru_cache(maxsize=256)
def routing(n_particles: int, n: int, n_ranks: int) -> Routing:
    """The routing of a prompt of n tokens (1 <= n <= n_particles), on the CPU.

    Particle i belongs to token floor(i * n / N): every token gets a contiguous block of
    floor or ceil(N / n) particles, at least one.
    """
    if not 1 <= n <= n_particles:
        raise ValueError(f"a prompt of {n} tokens does not fit {n_particles} particles")
    index = torch.arange(n_particles)
    token = (index * n) // n_particles  # (n_particles,) floor((i / N) * n), exact in ints
    start = torch.div(torch.arange(n) * n_particles + n - 1, n, rounding_mode="floor")
    rank = index - start[token]
    particle = torch.full((n, n_ranks), n_particles, dtype=torch.long)
    keep = rank < n_ranks  # (n_particles,)
    particle[token[keep], rank[keep]] = index[keep]
    return Routing(token, rank % n_ranks, rank // n_ranks, particle)


class ParticleAutoencoder(nn.Module):
    """Hidden states (n_tokens, d_model) of one layer <-> cloud (n_particles, d_particle).

    Args:
        config: the autoencoder's shape.
        d_model: hidden size of the language model.
        n_layers: transformer blocks of the language model (layers seen: n_layers + 1).
    """

    def __init__(self, config: ModelConfig, d_model: int, n_layers: int) -> None:
        super().__init__()
        self.config, self.d_model, self.n_layers = config, d_model, n_layers
        n_ranks = config.n_ranks or -(-d_model // config.d_particle)  # ceil: enough for exact
        self.n_ranks = min(n_ranks, config.n_particles)
        self.d_particle, n_frames = config.d_particle, n_layers + 1
        n_code = self.n_ranks * self.d_particle
        self.n_anchors = min(config.n_anchors, n_frames)
        # per-layer statistics of the corpus, set by `set_statistics` (saved with the weights)
        self.register_buffer("mean", torch.zeros(n_frames, d_model))  # (n_layers+1, d_model)
        self.register_buffer("scale", torch.ones(n_frames))  # (n_layers+1,)
        # anchor covariances as bases (rows: directions, most important first) and variances,
        # set by `set_statistics`; each layer's basis is the PCA of its mix of them
        self.register_buffer("anchors", torch.eye(d_model).expand(self.n_anchors, -1, -1).clone())
        self.register_buffer("variances", torch.ones(self.n_anchors, d_model))
        self.register_buffer("mixing", _hat_functions(n_frames, self.n_anchors), persistent=False)
        eye = torch.eye(n_code, d_model).expand(n_frames, -1, -1)
        self.register_buffer("basis", eye.clone(), persistent=False)  # (n_frames, n_code, d_model)
        self.derive_basis_on_load = True
        """Recompute `basis` after `load_state_dict`; loading turns it off to set a cached one."""
        self.register_load_state_dict_post_hook(self._after_load)
        self.layer_embedding = nn.Embedding(n_frames, config.d_pos)
        self.position_embedding = nn.Embedding(config.max_len, config.d_pos)
        self.length_features = nn.Linear(2, config.d_pos)
        self.decode_mlp = _mlp(2 * n_code + config.d_pos, config.d_hidden, n_code)

    @torch.no_grad()
    def set_statistics(
        self, mean: torch.Tensor, scale: torch.Tensor, covariance: torch.Tensor | None = None
    ) -> None:
        """Store corpus statistics and, optionally, the anchor covariances the bases come from.

        Args:
            mean: (n_layers+1, d_model) mean state of each layer.
            scale: (n_layers+1,) RMS distance of each layer's states from that mean.
            covariance: (n_layers+1, d_model, d_model) covariance of each layer's normalized
                states; anchor a keeps the weighted mean covariance of the layers it covers,
                as its principal directions and variances.
        """
        self.mean.copy_(mean)
        self.scale.copy_(scale.clamp_min(1e-6))
        if covariance is None:
            return
        weights = self.mixing / self.mixing.sum(0)  # (n_layers+1, n_anchors)
        for anchor in range(self.n_anchors):
            cov = torch.einsum("l,lde->de", weights[:, anchor], covariance.to(weights))
            values, vectors = torch.linalg.eigh(cov.double())  # ascending eigenvalues
            self.anchors[anchor] = vectors.flip(-1).T.float()  # (d_model, d_model)
            self.variances[anchor] = values.flip(-1).clamp_min(0).float()
        self._update_basis()

    @torch.no_grad()
    def _update_basis(self) -> None:
        """Each layer's orthonormal basis: the PCA of its mix of anchor covariances.

        The mix changes smoothly from layer to layer. Truncation only ever drops whole
        particles, so each particle's block of d_particle directions is then rotated to match
        the previous layer's block as closely as possible (orthogonal Procrustes): that changes
        no reconstruction, and makes particles move as little as the states allow from layer
        to layer.
        """
        anchors = self.anchors.double()
        covariances = torch.einsum("aod,ao,aoe->ade", anchors, self.variances.double(), anchors)
        mixed = torch.einsum("la,ade->lde", self.mixing.double(), covariances)
        _, vectors = torch.linalg.eigh(mixed.float())  # (n_frames, d, d) ascending
        basis = vectors.flip(-1).transpose(1, 2)  # (n_frames, d_model, d_model) rows
        full = self.d_model - self.d_model % self.d_particle  # rows in whole particle blocks
        for layer in range(1, basis.shape[0]):  # a rotation within a block changes no R²
            blocks = ((slice(0, full), self.d_particle), (slice(full, None), self.d_model - full))
            for rows, size in blocks:
                if size:
                    here = basis[layer, rows].reshape(-1, size, self.d_model)  # (blocks, k, d)
                    before = basis[layer - 1, rows].reshape(-1, size, self.d_model)
                    u, _, vh = torch.linalg.svd(before @ here.transpose(1, 2))  # Procrustes
                    basis[layer, rows] = (u @ vh @ here).reshape(-1, self.d_model)
        n_code = self.basis.shape[1]
        self.basis.zero_()
        self.basis[:, : min(n_code, self.d_model)] = basis[:, :n_code].to(self.basis)

    def routings(self, lengths: torch.Tensor) -> list[Routing]:
        """The routing of each prompt length in `lengths` (batch,)."""
        return [routing(self.config.n_particles, n, self.n_ranks) for n in lengths.tolist()]

    def particle_tokens(self, n_tokens: int) -> torch.Tensor:
        """(n_particles,) the token each particle holds for a prompt of n_tokens (CPU)."""
        return routing(self.config.n_particles, n_tokens, self.n_ranks).token

    def _after_load(self, module: nn.Module, incompatible_keys) -> None:
        if self.derive_basis_on_load:
            self._update_basis()

    def _per_layer(self, x: torch.Tensor, layer: torch.Tensor, inverse: bool) -> torch.Tensor:
        """Apply each row's layer basis (tokens sorted by layer: one matrix product a layer).

        Args:
            x: (n, d_model) normalized states, or (n, n_code) codes if `inverse`.
            layer: (n,) layer of each row.
            inverse: codes -> states instead of states -> codes.
        """
        order = torch.argsort(layer, stable=True)  # (n,)
        layers, counts = torch.unique_consecutive(layer[order], return_counts=True)
        pieces = [
            part @ (self.basis[lay] if inverse else self.basis[lay].T)
            for lay, part in zip(layers.tolist(), x[order].split(counts.tolist()), strict=True)
        ]
        out = torch.cat(pieces)  # (n, d_out) in sorted order
        return out[torch.argsort(order)]

    def _context(
        self, position: torch.Tensor, layer: torch.Tensor, length: torch.Tensor
    ) -> torch.Tensor:
        """(n, d_pos) features of each token's position, layer and prompt length."""
        trained = position.clamp(max=self.config.max_len - 1)  # longer: the last trained one
        context = self.position_embedding(trained) + self.layer_embedding(layer)
        per_token = (self.config.n_particles / length / self.n_ranks).clamp(max=1.0)  # (n,)
        return context + self.length_features(torch.stack([position / length, per_token], -1))

    def token_codes(
        self, hidden: torch.Tensor, layer: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Every token's ranked codes, computed on real tokens only (padding stays zero).

        Args:
            hidden: (batch, n_tokens, d_model) states.
            layer: (batch,) layer of each row.
            lengths: (batch,) prompt lengths (None: every row is full).

        Returns:
            (batch, n_tokens, n_ranks, d_particle) codes, most important rank first.
        """
        batch, n_tokens, _ = hidden.shape
        if lengths is None:
            lengths = torch.full((batch,), n_tokens, device=hidden.device)
        rows, position = _tokens(lengths, n_tokens)  # (n,) each: the real tokens
        lay = layer[rows]  # (n,)
        normed = (hidden[rows, position] - self.mean[lay]) / self.scale[lay, None]  # (n, d)
        flat = self._per_layer(normed, lay, inverse=False)  # (n, n_code)
        codes = flat.new_zeros(batch, n_tokens, flat.shape[-1])
        codes[rows, position] = flat
        return codes.view(batch, n_tokens, self.n_ranks, self.d_particle)

    def route(self, codes: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, n_tokens, n_ranks, k) codes -> (batch, n_particles, k) clouds for `lengths`.

        A particle of rank r sits at its token's block 0 plus detail_scale times block r
        (block 0 itself for rank 0); its j-th repeat blends blocks r and r+1 by j / (j + 1).
        """
        tables = self.routings(lengths)
        token = torch.stack([t.token for t in tables]).to(codes.device)  # (batch, n_particles)
        rank = torch.stack([t.rank for t in tables]).to(codes.device)  # (batch, n_particles)
        blend = torch.stack([t.repeat for t in tables]).to(codes)
        blend = (blend / (blend + 1))[..., None]  # (batch, n_particles, 1)
        rows = torch.arange(codes.shape[0], device=codes.device)[:, None]
        detail = codes.clone()
        detail[:, :, 0] = 0  # block 0 is the centre itself
        following = detail[rows, token, (rank + 1) % self.n_ranks]  # (batch, n_particles, k)
        own = detail[rows, token, rank]  # (batch, n_particles, k)
        centre = codes[rows, token, 0]  # (batch, n_particles, k)
        return centre + self.config.detail_scale * ((1 - blend) * own + blend * following)

    def encode(
        self, hidden: torch.Tensor, layer: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Encode a batch of prompts at given layers into particle clouds.

        Args:
            hidden: (batch, n_tokens, d_model) states, padded after each prompt's length.
            layer: (batch,) int64 layer index of each row (0 = embeddings).
            lengths: (batch,) int64 prompt lengths in 1..n_particles.

        Returns:
            (batch, n_particles, d_particle) clouds.
        """
        return self.route(self.token_codes(hidden, layer, lengths), lengths)

    def decode(
        self, clouds: torch.Tensor, layer: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Reconstruct every token's state from the clouds.

        Args:
            clouds: (batch, n_particles, d_particle).
            layer: (batch,) int64 layer indices.
            lengths: (batch,) int64 prompt lengths.

        Returns:
            (batch, max(lengths), d_model) states; positions past a prompt's length are zero.
        """
        batch, n_tokens = clouds.shape[0], int(lengths.max())
        padded = nn.functional.pad(clouds, (0, 0, 0, 1))  # (batch, n_particles+1, k), zero slot
        rows, position = _tokens(lengths, n_tokens)  # (n,) each: the real tokens
        lay, length = layer[rows], lengths[rows]
        n_particles = self.config.n_particles
        table = torch.stack(
            [
                nn.functional.pad(
                    t.particle, (0, 0, 0, n_tokens - len(t.particle)), value=n_particles
                )
                for t in self.routings(lengths)
            ]
        ).to(clouds.device)
        slots = table[rows, position]  # (n, n_ranks) the token's particles
        held = (slots < self.config.n_particles).repeat_interleave(self.d_particle, 1)
        held_values = padded[rows[:, None], slots]  # (n, n_ranks, k), zero where not held
        detail = (held_values - held_values[:, :1]) / self.config.detail_scale
        detail[:, 0] = held_values[:, 0]  # rank 0 (always held) is the centre itself
        gathered = (detail * (slots < self.config.n_particles)[..., None]).flatten(1)
        prompt_mean = torch.zeros(
            batch, gathered.shape[1], device=clouds.device, dtype=gathered.dtype
        ).index_add_(0, rows, gathered)
        prompt_mean = prompt_mean / lengths[:, None].to(gathered.dtype)  # (batch, n_code)
        context = self._context(position, lay, length.to(gathered.dtype))  # (n, d_pos)
        missing = self.decode_mlp(torch.cat([gathered, prompt_mean[rows], context], -1))
        codes = torch.where(held, gathered, missing)  # (n, n_code)
        normed = self._per_layer(codes, lay, inverse=True)  # (n, d_model)
        out = normed.new_zeros(batch, n_tokens, self.d_model)
        out[rows, position] = normed * self.scale[lay, None] + self.mean[lay]
        return out

    def forward(
        self, hidden: torch.Tensor, layer: torch.Tensor, lengths: torch.Tensor
    ) -> AutoencoderOutput:
        """Encode then decode; see `encode` and `decode` for shapes."""
        clouds = self.encode(hidden, layer, lengths)
        return AutoencoderOutput(clouds=clouds, reconstruction=self.decode(clouds, layer, lengths))


def _tokens(lengths: torch.Tensor, n_tokens: int) -> tuple[torch.Tensor, ...]:
    """Row and position of every real token of a batch padded to n_tokens."""
    mask = torch.arange(n_tokens, device=lengths.device)[None] < lengths[:, None]
    return mask.nonzero(as_tuple=True)


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Module:
    """The predictor of missing coordinates; it starts at exactly zero (their corpus mean)."""
    if d_hidden == 0:
        return _Zero(d_out)
    last = nn.Linear(d_hidden, d_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    first = nn.Linear(d_in, d_hidden)
    nn.init.normal_(first.weight, std=1.0 / math.sqrt(d_in))
    return nn.Sequential(first, nn.GELU(), last)


class _Zero(nn.Module):
    def __init__(self, d_out: int) -> None:
        super().__init__()
        self.d_out = d_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(*x.shape[:-1], self.d_out)


def _hat_functions(n_frames: int, n_anchors: int) -> torch.Tensor:
    """(n_frames, n_anchors) linear interpolation weights between evenly spaced anchor layers."""
    if n_anchors == 1:
        return torch.ones(n_frames, 1)
    where = torch.linspace(0, n_anchors - 1, n_frames)  # (n_frames,) position among anchors
    return (1 - (where[:, None] - torch.arange(n_anchors)[None]).abs()).clamp_min(0)
