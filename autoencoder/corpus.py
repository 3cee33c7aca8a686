"""Training text: corpus readers (.txt, .jsonl, folder, Hugging Face) and the default corpus.

Reading policies (also in `layerscan train --help`):
* .txt: one document per line; blank lines are skipped.
* .jsonl: one JSON object per line with the text in `text_field`; unusable lines are skipped
  with a warning, and a file without any usable line is an error.
* folder: every *.txt file under it (sorted) is one document.
* Bytes that are not UTF-8 are replaced by U+FFFD, with a warning naming the file and the
  number of lines affected.
* "default": the seed prompts written for layerscan (corpus/seed_prompts.txt), each continued
  by the language model itself; the generated text is cached, so it is built only once (the
  embedded model's is shipped: PACKAGED_TEXT).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import warnings
from pathlib import Path

from layerscan.core.errors import LayerscanError, Notice
from layerscan.core.outputs import atomic_path

SEED_PROMPTS = Path(__file__).resolve().parent / "corpus" / "seed_prompts.txt"
"""Seed prompts written for this project, one per line ("\\n" marks a line break)."""
GENERATION_BATCH = 53
GENERATION_TOKENS_PER_S = 90
"""Sampled tokens per second of the embedded model in batches on a 2-core CPU (measured),
for the time the default corpus is announced to take."""
PASSAGES_PER_DOCUMENT = 3
"""Generated passages joined (blank line between) into one document, so documents run past
max_len and long prompts exist for training and evaluation."""
PACKAGED_TEXT_KEY = "44b3ad2112717a1c"
"""The settings key (see `default_documents`) of the default corpus as the embedded model wrote
it with configs/default.yaml's settings (3 passages of 64 tokens per seed, seed 0)."""
PACKAGED_TEXT = SEED_PROMPTS.parent / f"default-{PACKAGED_TEXT_KEY}.jsonl.xz"
"""That text, shipped (xz, 85 KB): the embedded model's training reads it instead of writing it
again, and an autoencoder fitted for any other model reads the same text (`packaged_documents`)."""


def read_documents(
    corpus: str, text_field: str = "text", hf_split: str = "train", max_documents: int = 0
) -> list[str]:
    """The documents of a .txt / .jsonl file, a folder of .txt files, or "hf:NAME"."""
    if corpus.startswith("hf:"):
        docs = _read_hf(corpus[3:], text_field, hf_split, max_documents)
    else:
        path = Path(corpus)
        if not path.exists():
            raise LayerscanError(
                f"corpus {corpus}: no such file or folder (give a .txt, "
                ".jsonl, a folder of .txt files, hf:NAME or 'default')"
            )
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.txt") if p.is_file())
            if not files:
                raise LayerscanError(f"corpus folder {corpus} has no .txt files")
            docs = [text for f in files if (text := _read_text(f).strip())]
        elif path.suffix == ".jsonl":
            docs = _read_jsonl(path, text_field)
        else:
            docs = [line.strip() for line in _read_text(path).splitlines() if line.strip()]
    if max_documents:
        docs = docs[:max_documents]
    if not docs:
        raise LayerscanError(f"corpus {corpus} is empty: it holds no text to train on")
    return docs


def corpus_hash(documents: list[str]) -> str:
    """sha256 of the documents, in order (part of the hidden-state cache key)."""
    digest = hashlib.sha256()
    for doc in documents:
        digest.update(doc.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LayerscanError(f"corpus {path}: cannot read ({exc.strerror})") from exc
    text = raw.decode("utf-8", errors="replace")
    if "\ufffd" in text and "\ufffd".encode() not in raw:
        bad = sum("\ufffd" in line for line in text.splitlines())
        warnings.warn(
            f"corpus {path}: {bad} line(s) had bytes that are not UTF-8; they were "
            "replaced by U+FFFD",
            stacklevel=3,
        )
    return text


def _read_jsonl(path: Path, text_field: str) -> list[str]:
    docs, skipped = [], 0
    for line in _read_text(path).splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            text = record[text_field] if isinstance(record, dict) else None
        except (json.JSONDecodeError, KeyError):
            text = None
        if isinstance(text, str) and text.strip():
            docs.append(text.strip())
        else:
            skipped += 1
    if not docs and skipped:
        raise LayerscanError(
            f"corpus {path}: no usable line (each line must be a JSON object "
            f"with a non-empty string field {text_field!r}; set "
            "data.text_field for another field)"
        )
    if skipped:
        warnings.warn(
            f"corpus {path}: skipped {skipped} line(s) without a usable {text_field!r} field",
            stacklevel=3,
        )
    return docs


def _read_hf(name: str, text_field: str, split: str, max_documents: int) -> list[str]:
    try:
        import datasets
    except ImportError as exc:
        raise LayerscanError(
            "hf: corpora need the `datasets` package: pip install datasets"
        ) from exc
    try:
        data = datasets.load_dataset(name, split=split, streaming=bool(max_documents))
    except Exception as exc:  # noqa: BLE001 - network, missing dataset, bad split
        raise LayerscanError(
            f"cannot load Hugging Face dataset {name!r} split {split!r}: {exc}".splitlines()[0]
        ) from exc
    docs = []
    for record in data:
        text = record.get(text_field)
        if isinstance(text, str) and text.strip():
            docs.append(text.strip())
        if max_documents and len(docs) >= max_documents:
            break
    return docs


def seed_prompts(max_prompts: int = 0) -> list[str]:
    """The project's own seed prompts."""
    lines = SEED_PROMPTS.read_text(encoding="utf-8").splitlines()
    prompts = [line.replace("\\n", "\n") for line in lines if line.strip()]
    return prompts[:max_prompts] if max_prompts else prompts


def default_documents(
    loaded,
    cache_folder: Path,
    continuation_tokens: int,
    continuations_per_seed: int,
    max_prompts: int = 0,
    seed: int = 0,
    progress: bool = True,
) -> list[str]:
    """Seed prompts continued by the language model; generated once, then read from cache.

    Args:
        loaded: the LoadedModel that writes the continuations.
        cache_folder: where the generated corpus is kept (a .jsonl per settings).
        continuation_tokens: tokens sampled after each seed prompt.
        continuations_per_seed: sampled continuations per prompt.
        max_prompts: use only the first prompts (0: all).
        seed: sampling seed.
    """
    prompts = seed_prompts(max_prompts)
    key = default_corpus_key(
        prompts, loaded.model_id, loaded.revision, continuation_tokens, continuations_per_seed, seed
    )
    path = Path(cache_folder) / f"default-{key}.jsonl"
    if path.is_file():
        texts = _read_passages(path.read_text("utf-8"))
    elif key == PACKAGED_TEXT_KEY:
        texts = _read_passages(lzma.decompress(PACKAGED_TEXT.read_bytes()).decode("utf-8"))
    else:
        n_passages = len(prompts) * continuations_per_seed
        warnings.warn(
            f"writing the default corpus once: {n_passages} passages of "
            f"{continuation_tokens} tokens by {loaded.model_id} ("
            f"{about(n_passages * continuation_tokens / GENERATION_TOKENS_PER_S)} on "
            f"a CPU, far less on a GPU), kept in {path.parent}",
            Notice,
            stacklevel=2,
        )
        texts = _generate(
            loaded,
            [p for p in prompts for _ in range(continuations_per_seed)],
            continuation_tokens,
            seed,
            progress,
        )
        with atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), "utf-8")
    return _documents(texts)


def default_corpus_key(
    prompts: list[str],
    model_id: str,
    revision: str | None,
    continuation_tokens: int,
    continuations_per_seed: int,
    seed: int,
) -> str:
    """The name of a default corpus's text in the cache: a hash of what the text depends on."""
    return hashlib.sha256(
        json.dumps(
            [prompts, model_id, revision, continuation_tokens, continuations_per_seed, seed]
        ).encode()
    ).hexdigest()[:16]


def packaged_documents() -> list[str]:
    """The documents of the default corpus as the embedded model wrote it (PACKAGED_TEXT): text
    that serves any model, each tokenizing it with its own tokenizer."""
    return _documents(_read_passages(lzma.decompress(PACKAGED_TEXT.read_bytes()).decode("utf-8")))


def _read_passages(jsonl: str) -> list[str]:
    return [json.loads(line)["text"] for line in jsonl.splitlines()]


def _documents(passages: list[str]) -> list[str]:
    """Consecutive passages joined into documents (a seed's continuations make one)."""
    step = PASSAGES_PER_DOCUMENT
    return ["\n\n".join(passages[i : i + step]) for i in range(0, len(passages), step)]


def _generate(loaded, prompts: list[str], n_tokens: int, seed: int, progress: bool) -> list[str]:
    """Sample `n_tokens` continuations of each prompt, in left-padded batches."""
    import torch
    from tqdm import tqdm

    tokenizer, model = loaded.tokenizer, loaded.model
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    texts = []
    bar = tqdm(
        total=len(prompts),
        desc="writing default corpus",
        unit="passage",
        disable=not progress,
        leave=False,
    )
    for start in range(0, len(prompts), GENERATION_BATCH):
        batch = prompts[start : start + GENERATION_BATCH]
        encoded = [tokenizer(p)["input_ids"] for p in batch]
        longest = max(len(ids) for ids in encoded)
        ids = torch.full((len(batch), longest), pad if pad is not None else 0)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(encoded):  # left padding for generation
            ids[row, longest - len(seq) :], mask[row, longest - len(seq) :] = torch.tensor(seq), 1
        torch.manual_seed(seed + start)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids.to(loaded.device),
                attention_mask=mask.to(loaded.device),
                do_sample=True,
                temperature=0.8,
                top_p=0.95,
                max_new_tokens=n_tokens,
                min_new_tokens=min(8, n_tokens),
                pad_token_id=pad,
            )
        continuations = tokenizer.batch_decode(out[:, longest:], skip_special_tokens=True)
        texts += [p + c for p, c in zip(batch, continuations, strict=True)]
        bar.update(len(batch))
    bar.close()
    return texts


def about(seconds: float) -> str:
    """A rough duration for a notice: 'under a minute', 'about 12 min'."""
    return "under a minute" if seconds < 60 else f"about {round(seconds / 60)} min"
