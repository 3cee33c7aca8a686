"""Tiny random transformers of every supported family, built from configs (never downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

VOCAB = 263
"""Token ids of the tiny tokenizer and models: the 256 byte-level symbols and 7 special tokens
(no merges), so every id the tokenizer can produce, on any text, has an embedding."""
CONTEXT = 64
TRAINING_TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "a transformer turns tokens into hidden states layer by layer",
    "paris is the capital of france and berlin is the capital of germany",
    "particles drift through layer time as the prompt is read",
    "one two three four five six seven eight nine ten",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|user|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

ARCHITECTURES = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=CONTEXT
        )
    ),
    "llama": lambda: transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=CONTEXT,
        )
    ),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(
        transformers.Qwen2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=CONTEXT,
        )
    ),
    "gpt_neox": lambda: transformers.GPTNeoXForCausalLM(
        transformers.GPTNeoXConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=CONTEXT,
        )
    ),
    "phi3": lambda: transformers.Phi3ForCausalLM(
        transformers.Phi3Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=CONTEXT,
            pad_token_id=0,
        )
    ),
    "bert": lambda: transformers.BertForMaskedLM(
        transformers.BertConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=CONTEXT,
        )
    ),
    "distilbert": lambda: transformers.DistilBertForMaskedLM(
        transformers.DistilBertConfig(
            dim=32,
            hidden_dim=64,
            n_layers=2,
            n_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=CONTEXT,
            pad_token_id=0,
        )
    ),
    "roberta": lambda: transformers.RobertaForMaskedLM(
        transformers.RobertaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=CONTEXT + 2,
            pad_token_id=0,
        )
    ),
    "electra": lambda: transformers.ElectraForMaskedLM(
        transformers.ElectraConfig(
            embedding_size=16,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=CONTEXT,
        )
    ),
    "albert": lambda: transformers.AlbertForMaskedLM(
        transformers.AlbertConfig(
            embedding_size=16,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=CONTEXT,
            pad_token_id=0,
        )
    ),
    "stablelm": lambda: transformers.StableLmForCausalLM(
        transformers.StableLmConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=CONTEXT,
        )
    ),
    "mpt": lambda: transformers.MptForCausalLM(
        transformers.MptConfig(
            d_model=32,
            n_heads=2,
            n_layers=2,
            expansion_ratio=2,
            vocab_size=VOCAB,
            max_seq_len=CONTEXT,
        )
    ),
    "opt": lambda: transformers.OPTForCausalLM(
        transformers.OPTConfig(
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=CONTEXT,
            word_embed_proj_dim=32,
            pad_token_id=0,
        )
    ),
    "mistral": lambda: transformers.MistralForCausalLM(
        transformers.MistralConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=CONTEXT,
        )
    ),
    "gemma": lambda: transformers.GemmaForCausalLM(
        transformers.GemmaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=16,
            vocab_size=VOCAB,
            max_position_embeddings=CONTEXT,
            pad_token_id=0,
        )
    ),
    "gemma2": lambda: transformers.Gemma2ForCausalLM(
        transformers.Gemma2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=16,
            vocab_size=VOCAB,
            max_position_embeddings=CONTEXT,
            final_logit_softcapping=2.0,
            pad_token_id=0,
        )
    ),
    "falcon": lambda: transformers.FalconForCausalLM(
        transformers.FalconConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=CONTEXT,
        )
    ),
    "bloom": lambda: transformers.BloomForCausalLM(
        transformers.BloomConfig(hidden_size=32, n_layer=2, n_head=2, vocab_size=VOCAB)
    ),
    "phi": lambda: transformers.PhiForCausalLM(
        transformers.PhiConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=CONTEXT,
        )
    ),
    "gptj": lambda: transformers.GPTJForCausalLM(
        transformers.GPTJConfig(
            n_embd=32, n_layer=2, n_head=2, rotary_dim=8, vocab_size=VOCAB, n_positions=CONTEXT
        )
    ),
}
ENCODERS = ("bert", "distilbert", "roberta", "electra", "albert")
CAUSAL = tuple(arch for arch in ARCHITECTURES if arch not in ENCODERS)


def make_tokenizer(encoder: bool = False) -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of VOCAB entries, trained here in milliseconds."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<|user|>", "<|assistant|>"]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    from tokenizers import decoders

    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer=trainer)
    if encoder:
        from tokenizers import processors

        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=CONTEXT,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tiny_model(architecture: str, folder: Path, seed: int = 0) -> Path:
    """Build a seeded tiny random model and save it with its tokenizer as safetensors."""
    torch.manual_seed(seed)
    model = ARCHITECTURES[architecture]()
    model.save_pretrained(folder, safe_serialization=True)
    make_tokenizer(encoder=architecture in ENCODERS).save_pretrained(folder)
    return folder
