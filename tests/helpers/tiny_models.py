"""Tiny random-initialised Hugging Face models with a locally trained tokenizer.

Saved to a directory and loaded back through the same path users use (engine.models).
"""

from __future__ import annotations

from pathlib import Path

import torch

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "to be or not to be that is the question",
    "all the world's a stage and all the men and women merely players",
    "now is the winter of our discontent made glorious summer",
    "a horse a horse my kingdom for a horse",
    "friends romans countrymen lend me your ears",
    "speak the speech i pray you as i pronounced it to you",
    "we are such stuff as dreams are made on",
] * 20

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def train_tokenizer(out_dir: Path, vocab_size: int = 320, *, with_eos: bool = True, chat: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|pad|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    kwargs = {"eos_token": "<|endoftext|>", "pad_token": "<|pad|>"} if with_eos else {}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast


def build_llama(out_dir: Path, *, seed: int = 0, layers: int = 2, hidden: int = 64, vocab_tok=None,
                tie: bool = True, head_dim: int | None = None) -> Path:
    """head_dim: per-head width (default hidden / 4); servers such as vLLM's CPU kernels
    accept only common sizes (64, 128), so pass head_dim=64 for a model a server can load."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = vocab_tok or train_tokenizer(out_dir)
    if vocab_tok is not None:
        vocab_tok.save_pretrained(out_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.eos_token_id,
        tie_word_embeddings=tie,
        **({"head_dim": head_dim} if head_dim is not None else {}),
    )
    model = LlamaForCausalLM(config)
    _sharpen(model)
    model.save_pretrained(out_dir)
    return out_dir


def build_gpt2(out_dir: Path, *, seed: int = 1) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(out_dir)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tok),
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=512,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    _sharpen(model)
    model.save_pretrained(out_dir)
    return out_dir


def build_non_causal(out_dir: Path) -> Path:
    """A BERT encoder: a model AutoModelForCausalLM must refuse."""
    from transformers import BertConfig, BertModel

    out_dir.mkdir(parents=True, exist_ok=True)
    train_tokenizer(out_dir)
    config = BertConfig(vocab_size=320, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(out_dir)
    return out_dir


def _sharpen(model: torch.nn.Module) -> None:
    """Scale the output embedding so random logits are spread out: argmax ties between
    near-equal logits would make greedy comparisons hinge on float noise."""
    with torch.no_grad():
        emb = model.get_output_embeddings().weight
        emb.mul_(4.0)


def perturbed_copy(src: Path, dst: Path, *, noise: float, seed: int = 7, layers: int | None = None) -> Path:
    """A draft that agrees with `src` often but not always: its weights plus Gaussian noise,
    optionally keeping only its first `layers` layers (cheaper, less faithful)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise * p.std().clamp(min=1e-3))
    if layers is not None:
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def build_qwen2(out_dir: Path, *, seed: int = 2) -> Path:
    """A Qwen2 (biases on q/k/v, grouped-query attention): the fast path's other shape."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(out_dir)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.eos_token_id,
        tie_word_embeddings=True, use_sliding_window=False,
    )
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():  # random biases, so the fused bias path really is exercised
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    _sharpen(model)
    model.save_pretrained(out_dir)
    return out_dir


def build_mistral(out_dir: Path, *, seed: int = 4) -> Path:
    from transformers import MistralConfig, MistralForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(out_dir)
    torch.manual_seed(seed)
    config = MistralConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=512, sliding_window=None,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    model = MistralForCausalLM(config)
    _sharpen(model)
    model.save_pretrained(out_dir)
    return out_dir
