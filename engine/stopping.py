"""Incremental detokenisation and stop conditions (EOS, stop strings, max tokens)."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.events import FinishReason


def _plain_backend(tokenizer):
    """The `tokenizers` object behind a transformers tokenizer whose decode only forwards to it
    (no subclass override; we never ask for clean-up): two decodes per token and row at ~1.2 us
    instead of ~3.1 through the wrapper. None otherwise (the wrapper's decode is used)."""
    try:
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:
        return None
    cls = type(tokenizer)
    if not isinstance(tokenizer, TokenizersBackend) or cls.decode is not PreTrainedTokenizerBase.decode \
            or cls._decode is not TokenizersBackend._decode:
        return None
    return getattr(tokenizer, "_tokenizer", None)


@dataclass
class TextStream:
    """Turns a growing list of output token ids into streamed text deltas.

    Text that could still become a stop string is held back until it cannot, so a
    consumer never sees a stop string's first characters and then has them retracted.
    """

    tokenizer: object
    stop: tuple[str, ...] = ()
    text: str = ""  # decoded text of all output tokens so far (stop string cut off when hit)
    emitted: int = 0  # characters of `text` already handed out
    stopped_by_string: bool = False
    kept: int = 0  # tokens of the last add() taken into the stream
    _ids: list[int] = field(default_factory=list)

    _prefix_offset: int = 0  # ids[_prefix_offset:_read_offset] decode to the last stable piece
    _read_offset: int = 0

    def __post_init__(self) -> None:
        self._backend = _plain_backend(self.tokenizer)

    def decode(self, ids: list[int]) -> str:
        if self._backend is not None:
            return self._backend.decode(ids, skip_special_tokens=True)
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _next_piece(self) -> str:
        """Text added by the newest token, decoding only a short window (not the whole output):
        byte-level tokenizers need a little left context to decode a token correctly."""
        ids = self._ids
        prefix = self.decode(ids[self._prefix_offset:self._read_offset])
        full = self.decode(ids[self._prefix_offset:])
        if full.endswith("\ufffd") or not full.startswith(prefix):
            return ""  # a multi-byte character is not complete yet: wait for more tokens
        self._prefix_offset = self._read_offset
        self._read_offset = len(ids)
        return full[len(prefix):]

    def add(self, new_ids: list[int]) -> tuple[str, tuple[str, ...]]:
        """Append tokens; return (text delta safe to show, per-token text pieces). A stop string
        ends the stream at the token that completed it: `kept` says how many of new_ids were
        taken (several arrive at once from accepted drafts or a burst of decode steps)."""
        pieces = []
        self.kept = 0
        for tok in new_ids:
            if self.stopped_by_string:
                break  # tokens after the one that completed a stop string are not output
            self._ids.append(tok)
            piece = self._next_piece()
            pieces.append(piece)
            self.text += piece
            self.kept += 1
            for s in self.stop:
                cut = self.text.find(s)
                if cut != -1:
                    self.text = self.text[:cut]
                    self.stopped_by_string = True
        safe_end = len(self.text) if self.stopped_by_string else len(self.text) - self._held_back()
        safe_end = max(safe_end, self.emitted)
        delta = self.text[self.emitted:safe_end]
        self.emitted = safe_end
        return delta, tuple(pieces)

    def _held_back(self) -> int:
        """Length of the longest suffix of text that is a proper prefix of a stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:n]):
                    best = max(best, n)
                    break
        return best

    def flush(self) -> str:
        """The request ended: hand out everything held back, including the bytes of a character
        no later token will complete, so that the final text is decode(all tokens)."""
        if not self.stopped_by_string and self._read_offset < len(self._ids):
            prefix = self.decode(self._ids[self._prefix_offset:self._read_offset])
            full = self.decode(self._ids[self._prefix_offset:])
            tail = full[len(prefix):] if full.startswith(prefix) else ""
            if tail:
                self.text += tail
                self._prefix_offset = self._read_offset = len(self._ids)
                for s in self.stop:
                    cut = self.text.find(s)
                    if cut != -1:
                        self.text = self.text[:cut]
                        self.stopped_by_string = True
        delta = self.text[self.emitted:]
        self.emitted = len(self.text)
        return delta


def finish_reason(
    *,
    new_ids: list[int],
    num_output: int,
    max_new_tokens: int,
    eos_ids: set[int],
    ignore_eos: bool,
    stopped_by_string: bool,
    context_full: bool,
) -> FinishReason | None:
    if not ignore_eos and any(t in eos_ids for t in new_ids):
        return FinishReason.STOP
    if stopped_by_string:
        return FinishReason.STOP
    if num_output >= max_new_tokens or context_full:
        return FinishReason.LENGTH
    return None
