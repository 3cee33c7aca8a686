"""The `Components` record: what each block's attention and MLP wrote into the residual stream,
token by token, and the KV cache and attention split of a generation (importable without torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from layerscan.core.errors import LayerscanError

SPLIT_PARTS = ("prompt", "generated", "self")
"""The three parts of a token's attention mass in `attention_split`, in order."""
WRITE_UNITS = "L2 norm in the raw residual stream (the model's hidden-state units)"
"""What `attention_write`, `mlp_write` and `update` measure (said on every picture of them)."""
ARRAYS = (
    "attention_write",
    "mlp_write",
    "update",
    "attention_share",
    "mlp_share",
    "attention_split",
    "kv_tokens",
    "kv_bytes",
)


@dataclass
class Components:
    """Per block and token: what attention and the MLP added to the residual stream.

    For block l and token t, with h the raw residual stream, the block's update is
    h_l - h_(l-1) = a + m (a: the attention write, m: the MLP write). A parallel block (GPT-J,
    Falcon, Phi, GPT-NeoX with use_parallel_residual) computes a and m from the same input and
    adds both; the identity and the split are the same, only m does not see this block's a.
    """

    attention_write: np.ndarray
    """(n_layers, n_tokens) float32 |a|, the norm of the attention block's write."""
    mlp_write: np.ndarray
    """(n_layers, n_tokens) float32 |m|, the norm of the MLP block's write."""
    update: np.ndarray
    """(n_layers, n_tokens) float32 |h_l - h_(l-1)|, the norm of the whole block's update."""
    attention_share: np.ndarray
    """(n_layers, n_tokens) float32 <a, u> / |u|², u = a + m: attention's part of the update
    along the update's own direction (may leave 0..1 when a and m partly cancel)."""
    mlp_share: np.ndarray
    """(n_layers, n_tokens) float32 <m, u> / |u|²; attention_share + mlp_share = 1."""
    attention_split: np.ndarray
    """(n_layers, n_tokens, 3) float32 each token's attention mass (mean over heads) on the
    prompt tokens before it, on earlier generated tokens, and on itself (SPLIT_PARTS); sums
    to 1."""
    kv_tokens: np.ndarray
    """(n_tokens,) int64 positions held in the KV cache once the token has been processed."""
    kv_bytes: np.ndarray
    """(n_tokens,) int64 bytes of the KV cache's keys and values at that point."""
    parallel: bool = False
    """Whether attention and the MLP run in parallel on the same input (see above)."""
    residual_error: float = 0.0
    """max |h_l - h_(l-1) - (a + m)| over max |h_l - h_(l-1)|: how exactly the writes add up
    to the captured stream (float rounding only: ~1e-7 in float32)."""
    replay_seconds: float = 0.0
    """Seconds of the one eager replay of the whole sequence that measured `attention_split`."""

    @property
    def n_layers(self) -> int:
        return self.attention_write.shape[0]

    @property
    def n_tokens(self) -> int:
        return self.attention_write.shape[1]

    def validate(self, n_layers: int, n_tokens: int) -> None:
        """Raise LayerscanError unless every array has the shape of (n_layers, n_tokens) and
        finite values."""
        expected = {name: (n_layers, n_tokens) for name in ARRAYS[:5]}
        expected.update(
            attention_split=(n_layers, n_tokens, len(SPLIT_PARTS)),
            kv_tokens=(n_tokens,),
            kv_bytes=(n_tokens,),
        )
        for name, shape in expected.items():
            value = np.asarray(getattr(self, name))
            if value.shape != shape:
                raise LayerscanError(f"components {name} has shape {value.shape}, not {shape}")
            if not np.isfinite(value).all():
                raise LayerscanError(f"components {name} holds non-finite values")

    def prefix(self, n_tokens: int) -> Components:
        """The first `n_tokens` tokens (exact: a causal token's writes never see later ones)."""
        return Components(
            **{name: np.asarray(getattr(self, name))[..., :n_tokens] for name in ARRAYS[:5]},
            attention_split=self.attention_split[:, :n_tokens],
            kv_tokens=self.kv_tokens[:n_tokens],
            kv_bytes=self.kv_bytes[:n_tokens],
            parallel=self.parallel,
            residual_error=self.residual_error,
            replay_seconds=self.replay_seconds,
        )

    def arrays(self, prefix: str = "components/") -> dict[str, np.ndarray]:
        """The arrays to store in a tensor file, under `prefix`."""
        out = {f"{prefix}{name}": np.asarray(getattr(self, name)) for name in ARRAYS}
        for name in ("kv_tokens", "kv_bytes"):
            out[f"{prefix}{name}"] = out[f"{prefix}{name}"].astype(np.int64)
        return out

    def meta(self) -> dict:
        """The scalars to store in a tensor file's JSON metadata."""
        return {
            "parallel": self.parallel,
            "residual_error": self.residual_error,
            "replay_seconds": self.replay_seconds,
        }

    @classmethod
    def from_file(
        cls, arrays: dict[str, np.ndarray], meta: dict | None, prefix: str = "components/"
    ) -> Components | None:
        """The record stored by `arrays` and `meta`, or None when the file holds none."""
        if meta is None or f"{prefix}attention_write" not in arrays:
            return None
        try:
            return cls(
                **{name: arrays[f"{prefix}{name}"] for name in ARRAYS},
                parallel=bool(meta["parallel"]),
                residual_error=float(meta["residual_error"]),
                replay_seconds=float(meta["replay_seconds"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LayerscanError(f"component arrays are incomplete ({exc})") from exc
