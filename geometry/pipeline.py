"""The one orchestrator: prompts in, `Scan` / `DiffScan` / `Heatmap` records out.

`Pipeline` loads the model once, picks or fits its autoencoder, checks every length right after
tokenizing (before any forward pass), captures, and hands the captures to `geometry.build`.
Every command and the Python API (`layerscan.scan`, `layerscan.diff`) go through it, so a
prompt gives the same arrays whoever asked.
"""

from __future__ import annotations

import time
from dataclasses import replace

from layerscan.autoencoder.artifact import TrainedAutoencoder, load_autoencoder
from layerscan.autoencoder.capture.capture_file import Capture, CaptureOptions
from layerscan.autoencoder.capture.hidden_states import capture as capture_states
from layerscan.autoencoder.capture.hidden_states import prompt_ids
from layerscan.autoencoder.capture.loading import LoadedModel, ModelOptions, load_model
from layerscan.autoencoder.capture.model_pair import (
    SecondModelOptions,
    check_model_pair,
    load_second_model,
    plan_second_model,
)
from layerscan.autoencoder.config import FitOptions
from layerscan.autoencoder.quick_fit import fitted_autoencoder, needs_fit
from layerscan.core.errors import LayerscanError
from layerscan.core.startup import paused_collection
from layerscan.geometry.build import diff_captures, scan_capture, torch_threads
from layerscan.geometry.diff_scan import DiffScan
from layerscan.geometry.heatmap import Heatmap, HeatmapOptions, heatmap_captures
from layerscan.geometry.scan_file import Scan
from layerscan.geometry.scan_options import ScanOptions

Model = LoadedModel | ModelOptions | str
"""A loaded model, the options that load one, or its name ("embedded", a folder, a hub id)."""
LIMIT_REASON = "what the autoencoder holds, one particle a token"


class Pipeline:
    """Everything one run asks for, loaded once and reused for every prompt it scans.

    Args:
        model: a LoadedModel, ModelOptions, or a model name (default: the embedded model).
        capture: what each capture keeps (normalization, generation, logit lens).
        options: projection, faithfulness and surfaces.
        autoencoder: a TrainedAutoencoder, its folder, "fit" (fit one even where one is
            packaged), or None: the packaged one for the embedded model, and one fitted on first
            use (then cached) for any other model.
        fit: how a first-use fit reads text (FitOptions).
        second: --model-b / --adapter: B of a diff goes through this second model.
    """

    def __init__(
        self,
        model: Model | None = None,
        *,
        capture: CaptureOptions | None = None,
        options: ScanOptions | None = None,
        autoencoder: TrainedAutoencoder | str | None = None,
        fit: FitOptions | None = None,
        second: SecondModelOptions | None = None,
    ) -> None:
        self._loaded = model if isinstance(model, LoadedModel) else None
        if isinstance(model, str):
            model = ModelOptions(model=model)
        self.model = (
            ModelOptions(model=model.model_id)
            if isinstance(model, LoadedModel)
            else model or ModelOptions()
        )
        self.capture = capture or CaptureOptions()
        self.options = options or ScanOptions()
        self.fit = fit or FitOptions()
        self.second = second or SecondModelOptions()
        self._autoencoder = autoencoder if isinstance(autoencoder, TrainedAutoencoder) else None
        self.autoencoder_choice = None if self._autoencoder else autoencoder
        self._loaded_b: LoadedModel | None = None

    def language_model(self) -> LoadedModel:
        """The model, loaded on first use (without garbage collection: see `paused_collection`)."""
        if self._loaded is None:
            with paused_collection():
                self._loaded = load_model(
                    self.model.model,
                    device=self.model.device,
                    dtype=self.model.dtype,
                    trust_remote_code=self.model.trust_remote_code,
                )
        return self._loaded

    def load(self) -> tuple[LoadedModel, TrainedAutoencoder]:
        """The model and its autoencoder on the model's device, each loaded once.

        A given or packaged autoencoder loads first (on the CPU), so that a missing, corrupt or
        mismatched folder fails in one line before minutes of model loading; B's configs are
        checked before any weights load. A fitted one needs the model's states, so it comes
        from the loaded model (cached after the first fit; a fit is work, with collection on).
        """
        if self._autoencoder is None and not needs_fit(
            self.autoencoder_choice, self.model.model, self.capture.normalization
        ):
            with paused_collection():
                self._autoencoder = load_autoencoder(self.autoencoder_choice)
        if self.second.wanted and self._loaded_b is None:
            self._check_second()
        loaded = self.language_model()
        if self._autoencoder is None:
            self._autoencoder = fitted_autoencoder(loaded, self.capture.normalization, self.fit)
        self._autoencoder.model.to(loaded.device)
        return loaded, self._autoencoder

    def _check_second(self):
        """Check --model-b/--adapter against A from configs alone; returns B's plan."""
        shape = None
        if self._autoencoder is not None:
            shape = (self._autoencoder.config.d_model, self._autoencoder.config.n_layers)
        plan = plan_second_model(self.model, self.second)
        check_model_pair(self.model, plan, shape)  # a fit's shape is A's, which this checks
        return plan

    def second_model(self) -> LoadedModel | None:
        """B's model (--model-b / --adapter), checked from configs before its weights load."""
        if not self.second.wanted:
            return None
        if self._loaded_b is None:
            plan = self._check_second()
            with paused_collection():
                self._loaded_b = load_second_model(self.model, plan)
        return self._loaded_b

    def check_prompts(self, prompts: list[str]) -> list[list[int]]:
        """Every prompt's token ids, each length checked against the model's context and the
        autoencoder's particle count before any forward pass."""
        loaded, autoencoder = self.load()
        limit = autoencoder.config.max_tokens
        return [prompt_ids(loaded, p, self.capture, limit, LIMIT_REASON) for p in prompts]

    def _options(self, device) -> ScanOptions:
        return replace(self.options, device=str(device))  # the projection runs on the model's

    def scan(self, prompt: str, timings: dict | None = None) -> Scan:
        """Load (once), check, capture, encode, project, measure and surface one prompt.

        Args:
            timings: if given, filled with seconds per stage (capture, encode, project, ...).
        """
        timings = {} if timings is None else timings
        with torch_threads(self.options.threads):
            (ids,) = self.check_prompts([prompt])
            loaded, autoencoder = self.load()
            start = time.perf_counter()
            captured = capture_states(loaded, prompt, self.capture, token_ids=ids)
            timings["capture"] = time.perf_counter() - start
            return scan_capture(captured, autoencoder, self._options(loaded.device), timings)

    def diff(self, prompt_a: str, prompt_b: str, timings: dict | None = None) -> DiffScan:
        """Two prompts (B through the second model, if any) in one common 3D space."""
        if self.options.token_time:  # before any model work
            raise LayerscanError("--token-time does not apply to diffs; drop it")
        timings = {} if timings is None else timings
        with torch_threads(self.options.threads):
            ids_a, ids_b = self.check_prompts([prompt_a, prompt_b])
            loaded, autoencoder = self.load()
            loaded_b = self.second_model()
            start = time.perf_counter()
            captures = [
                capture_states(loaded, prompt_a, self.capture, token_ids=ids_a),
                self._capture_b(loaded_b, prompt_b, ids_b),
            ]
            timings["capture"] = time.perf_counter() - start
            return diff_captures(
                *captures,
                autoencoder,
                self._options(loaded.device),
                timings=timings,
                other_model=loaded_b is not None,
            )

    def _capture_b(self, loaded_b: LoadedModel | None, prompt: str, ids: list[int]) -> Capture:
        if loaded_b is None:
            return capture_states(self.language_model(), prompt, self.capture, token_ids=ids)
        return capture_states(loaded_b, prompt, self.capture)  # B's tokenizer may differ

    def capture_prompt(self, prompt: str) -> Capture:
        """One prompt's hidden states (no autoencoder: only the model's context limits it)."""
        with torch_threads(self.options.threads):
            loaded = self.language_model()
            ids = prompt_ids(loaded, prompt, self.capture)
            return capture_states(loaded, prompt, self.capture, token_ids=ids)

    def heatmap(self, prompt: str, options: HeatmapOptions | None = None) -> Heatmap:
        """A prompt's activation image (B - A with a second model); needs no autoencoder."""
        with torch_threads(self.options.threads):
            if self.second.wanted and self._loaded_b is None:
                self._check_second()  # before any weights load
            loaded = self.language_model()
            loaded_b = self.second_model()
            capture = replace(self.capture, top_k=0)  # the image shows no logit lens
            capture_a = capture_states(loaded, prompt, capture)
            capture_b = None if loaded_b is None else capture_states(loaded_b, prompt, capture)
            return heatmap_captures(capture_a, capture_b, options)


def scan_prompt(
    prompt: str,
    options: ScanOptions | None = None,
    *,
    model: Model | None = None,
    capture: CaptureOptions | None = None,
    autoencoder: TrainedAutoencoder | str | None = None,
    timings: dict | None = None,
) -> Scan:
    """One prompt through a `Pipeline` of these settings (see `Pipeline.scan`)."""
    pipeline = Pipeline(model, capture=capture, options=options, autoencoder=autoencoder)
    return pipeline.scan(prompt, timings)


def diff_prompts(
    prompt_a: str,
    prompt_b: str,
    options: ScanOptions | None = None,
    *,
    model: Model | None = None,
    capture: CaptureOptions | None = None,
    autoencoder: TrainedAutoencoder | str | None = None,
    timings: dict | None = None,
    second: SecondModelOptions | None = None,
) -> DiffScan:
    """Two prompts through a `Pipeline` of these settings (see `Pipeline.diff`); with `second`
    (--model-b / --adapter), B goes through that model, encoded by A's autoencoder."""
    pipeline = Pipeline(
        model, capture=capture, options=options, autoencoder=autoencoder, second=second
    )
    return pipeline.diff(prompt_a, prompt_b, timings)
