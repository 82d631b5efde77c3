"""Byte-level BPE tokenizer and chat template for the bundled demo models.

The tokenizer is trained with the ``tokenizers`` library and wrapped as a
standard ``PreTrainedTokenizerFast``, so ``AutoTokenizer.from_pretrained`` loads
it like any hub tokenizer. Byte-level BPE without a prefix space and without
clean-up round-trips any text exactly: ``decode(encode(x)) == x``.

The chat template maps a conversation onto the corpus layout (see
``app.demo_corpus``): a system message becomes a stage direction
``[...]``, user turns are spoken by HORATIO (or the message's ``name``),
assistant turns by HAMLET, and the generation prompt is ``HAMLET:\\n``. Both
speak often in Hamlet, which is a training play.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"  # separates plays in the training stream
BOS_TOKEN = EOS_TOKEN  # a chat starts like a new play
PAD_TOKEN = "<|pad|>"
USER_SPEAKER = "HORATIO"
ASSISTANT_SPEAKER = "HAMLET"
END_OF_SPEECH = "\n\n"

# Written with Jinja string escapes and no literal newlines: transformers renders
# templates with trim_blocks/lstrip_blocks, which would eat newlines after tags.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set content = message['content'] | trim %}"
    "{% if message['role'] == 'system' %}"
    "{% if content %}{{ '[' ~ content ~ ']\\n\\n' }}{% endif %}"
    "{% elif message['role'] == 'user' %}"
    "{{ (message.get('name') or '" + USER_SPEAKER + "') | upper ~ ':\\n' ~ content ~ '\\n\\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ (message.get('name') or '" + ASSISTANT_SPEAKER + "') | upper ~ ':\\n' ~ content ~ '\\n\\n' }}"
    "{% else %}"
    "{{ raise_exception('unsupported role: ' ~ message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '" + ASSISTANT_SPEAKER + ":\\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, max_length: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and wrap it with special tokens and the chat template."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def encode_plain(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens added (fast batch path)."""
    return [enc.ids for enc in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
