"""Message text -> HTML for QTextBrowser: Markdown (raw HTML disabled) or tokens coloured by origin."""

from __future__ import annotations

import html

import markdown

from ui.theme import Theme

DRAFT = "draft"
TARGET = "target"
STREAMING_CURSOR = "▍"


def _markdown() -> markdown.Markdown:
    md = markdown.Markdown(extensions=["fenced_code", "tables", "sane_lists", "nl2br"])
    # model output is text, never markup: drop raw-HTML handling so '<b>' shows literally
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    return md


_MD = _markdown()


def markdown_html(text: str, *, streaming: bool = False) -> str:
    _MD.reset()
    body = _MD.convert(text)
    # Qt wraps <pre> only with an explicit pre-wrap; long code lines must not be clipped
    body = body.replace("<pre>", '<pre style="white-space: pre-wrap;">')
    if streaming:
        body = _append_cursor(body) if text else f'<p class="cursor">{STREAMING_CURSOR}</p>'
    return body


def _append_cursor(body: str) -> str:
    cursor = f'<span class="cursor">{STREAMING_CURSOR}</span>'
    for closing in ("</p>", "</li>\n</ul>", "</li>\n</ol>", "</code></pre>"):
        if body.rstrip().endswith(closing):
            stripped = body.rstrip()
            return stripped[: -len(closing)] + cursor + closing
    return body + cursor


def origin_html(text: str, runs: list[list[str]] | list[tuple[str, str]], theme: Theme, *,
                streaming: bool = False) -> str:
    """Plain text with each run's background set by its origin. `text` is what is shown: runs are
    clipped to it (a stop string cut off at the end) and any uncovered tail is left uncoloured."""
    colours = {DRAFT: theme.draft_token, TARGET: theme.target_token}
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
        .tokens {{ margin: 0px; }}
    """
