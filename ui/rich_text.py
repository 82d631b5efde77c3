"""Message text -> HTML for QTextBrowser: Markdown (raw HTML disabled) or tokens coloured by origin.

Model output is untrusted, so rendering is bounded and inert:
- no image is ever loaded: an image becomes a text placeholder naming its target;
- only http(s) links stay links (the message view asks before opening one); any other
  scheme (file:, javascript:, qrc:, data:, ...) is shown as text marked "blocked link";
- the text is cut into blocks at blank lines; each block is rendered once and cached, so a
  streaming answer re-renders only its tail; a block longer than BLOCK_MAX_CHARS is shown as
  escaped plain text; a render call stops converting blocks once its time budget is spent
  (those left show as plain text until the next call) and never shows more than
  MAX_SHOWN_CHARS. The parser (markdown-it, CommonMark) is linear in practice and nesting is
  capped, so no input blocks the GUI thread for long.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from markdown_it import MarkdownIt

from ui.theme import Theme

DRAFT = "draft"
TARGET = "target"
STREAMING_CURSOR = "▍"
BLOCK_MAX_CHARS = 3000  # a longer block (no blank line) is shown as plain text
MAX_SHOWN_CHARS = 40_000  # Qt's own layout costs ~0.6 us a character: show no more than this
MAX_NESTING = 20
ALLOWED_LINK_SCHEMES = ("http", "https")
_FENCES = ("```", "~~~")


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "breaks": True, "maxNesting": MAX_NESTING})
    md.enable("table")
    md.enable("strikethrough")
    md.add_render_rule("image", _render_image)
    md.add_render_rule("link_open", _render_link_open)
    md.add_render_rule("link_close", _render_link_close)
    md.validateLink = lambda _url: True  # every target reaches our rules, which decide what it may do
    return md


def link_allowed(url: str) -> bool:
    """Only http(s) links with a host may be opened (after the user confirms)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    return parts.scheme.lower() in ALLOWED_LINK_SCHEMES and bool(parts.netloc)


def _render_image(self, tokens, idx, _options, _env) -> str:
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children or [], _options, _env)
    src = token.attrGet("src") or ""
    # never an <img>: the document would load it (file:, a FIFO, /dev/zero)
    return f'<span class="blocked">[image: {_escape(alt or "no description")} — {_escape(str(src))}]</span>'


def _render_link_open(self, tokens, idx, _options, env) -> str:
    href = str(tokens[idx].attrGet("href") or "")
    stack = env.setdefault("links", [])
    if link_allowed(href):
        stack.append(None)
        return f'<a href="{html.escape(href, quote=True)}" title="{html.escape(href, quote=True)}">'
    stack.append(href)
    return ""


def _render_link_close(self, _tokens, _idx, _options, env) -> str:
    stack = env.get("links") or [None]
    blocked = stack.pop()
    if blocked is None:
        return "</a>"
    return f' <span class="blocked">(blocked link: {_escape(blocked)})</span>'


_MD = _parser()


def split_blocks(text: str) -> list[str]:
    """Cut Markdown into top-level blocks at blank lines, keeping fenced code whole and
    indented continuations (list items, code) with the block they belong to. Linear."""
    blocks: list[str] = []
    current: list[str] = []
    fence: str | None = None
    blank_seen = False
    for line in text.split("\n"):
        stripped = line.lstrip()
        if fence is not None:
            current.append(line)
            if stripped.startswith(fence) and not stripped[len(fence):].strip("`~ \t"):
                fence = None
            continue
        if not stripped:
            blank_seen = True
            if current:
                current.append(line)
            continue
        if blank_seen and current and not line[:1].isspace():
            blocks.append("\n".join(current).strip("\n"))
            current = []
        blank_seen = False
        current.append(line)
        opener = next((f for f in _FENCES if stripped.startswith(f)), None)
        if opener is not None:
            fence = stripped[: len(stripped) - len(stripped.lstrip(opener[0]))]
    if current:
        blocks.append("\n".join(current).strip("\n"))
    return [b for b in blocks if b.strip()]


def _plain_block(block: str) -> str:
    return f'<p style="white-space: pre-wrap;">{_escape(block)}</p>'


def render_block(block: str) -> str:
    """One block's HTML; too long a block (or one past the nesting cap) stays plain text."""
    if len(block) > BLOCK_MAX_CHARS:
        if block.lstrip().startswith(_FENCES):  # long code stays code: escaping is linear
            inner = block.split("\n", 1)[1] if "\n" in block else ""
            inner = inner.rstrip().rstrip("`~").rstrip("\n")
            return f'<pre style="white-space: pre-wrap;"><code>{_escape(inner)}</code></pre>'
        return _plain_block(block)
    body = _MD.render(block, {})
    # Qt wraps <pre> only with an explicit pre-wrap; long code lines must not be clipped
    return body.replace("<pre>", '<pre style="white-space: pre-wrap;">')


class MarkdownRenderer:
    """Renders one message, caching each block's HTML so a streaming answer costs its tail only."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._cache: dict[str, str] = {}
        self._clock = clock

    def render(self, text: str, *, streaming: bool = False,
               budget_s: float | None = 0.02) -> tuple[str, bool]:
        """(html, complete). Not complete: some blocks show as plain text until a later call."""
        shown, hidden = text[:MAX_SHOWN_CHARS], len(text) - MAX_SHOWN_CHARS
        blocks = split_blocks(shown)
        start = self._clock()
        parts: list[str] = []
        complete = True
        cache: dict[str, str] = {}
        for i, block in enumerate(blocks):
            out = self._cache.get(block)
            last = i == len(blocks) - 1
            if out is None:
                over = budget_s is not None and self._clock() - start > budget_s
                if over:
                    out = _plain_block(block)
                    complete = False
                else:
                    out = render_block(block)
                    if not (streaming and last):  # the streaming tail changes every token
                        cache[block] = out
            else:
                cache[block] = out
            parts.append(out)
        self._cache = cache  # only blocks still shown stay cached
        body = "".join(parts)
        if hidden > 0:
            body += (f'<p class="blocked">… {hidden:,} more characters not shown here '
                     "(Copy copies the whole message)</p>")
        if streaming:
            body = _append_cursor(body) if text else f'<p class="cursor">{STREAMING_CURSOR}</p>'
        return body, complete


def markdown_html(text: str, *, streaming: bool = False) -> str:
    """The whole message at once (no time budget; every block still bounded)."""
    return MarkdownRenderer().render(text, streaming=streaming, budget_s=None)[0]


def _append_cursor(body: str) -> str:
    cursor = f'<span class="cursor">{STREAMING_CURSOR}</span>'
    for closing in ("</p>\n", "</p>", "</li>\n</ul>\n", "</li>\n</ol>\n", "</code></pre>\n"):
        if body.endswith(closing):
            return body[: -len(closing)] + cursor + closing
    return body + cursor


def origin_html(text: str, runs: list[list[str]] | list[tuple[str, str]], theme: Theme, *,
                streaming: bool = False) -> str:
    """Plain text with each run's background set by its origin. `text` is what is shown: runs are
    clipped to it (a stop string cut off at the end) and any uncovered tail is left uncoloured."""
    colours = {DRAFT: theme.draft_token, TARGET: theme.target_token}
    text = text[:MAX_SHOWN_CHARS]
    out = []
    used = 0
    for piece, origin in runs:
        if used >= len(text):
            break
        piece = piece[: len(text) - used]
        used += len(piece)
        out.append(f'<span style="background-color:{colours.get(origin, theme.surface)};">'
                   f"{_escape(piece)}</span>")
    if used < len(text):
        out.append(_escape(text[used:]))
    if streaming:
        out.append(f'<span class="cursor">{STREAMING_CURSOR}</span>')
    return f'<p class="tokens" style="white-space: pre-wrap;">{"".join(out)}</p>'


def _escape(text: str) -> str:
    return html.escape(text, quote=False)


def document_css(theme: Theme) -> str:
    """Default stylesheet of a message's QTextDocument (Qt's rich-text CSS subset)."""
    return f"""
        body {{ color: {theme.text}; }}
        p {{ margin-top: 0px; margin-bottom: 8px; }}
        a {{ color: {theme.accent}; }}
        code {{ font-family: "DejaVu Sans Mono", "Menlo", "Consolas", monospace;
                background-color: {theme.code_bg}; }}
        pre {{ font-family: "DejaVu Sans Mono", "Menlo", "Consolas", monospace;
               background-color: {theme.code_bg}; margin-top: 4px; margin-bottom: 8px; }}
        table {{ border-collapse: collapse; margin-bottom: 8px; }}
        th {{ background-color: {theme.surface_alt}; padding: 4px 8px; }}
        td {{ padding: 4px 8px; }}
        h1, h2, h3 {{ margin-top: 6px; margin-bottom: 6px; }}
        .cursor {{ color: {theme.accent}; }}
        .blocked {{ color: {theme.muted}; }}
        .tokens {{ margin: 0px; }}
    """
