"""The two footer lines under an answer: its figures and the configuration(s) it ran under.
Pure string building from the plain dicts a message stores (no widgets here)."""

from __future__ import annotations

from ui.formatting import format_ms

SEP = " · "


def why_it_stopped(m: dict) -> str:
    reason = m.get("reason")
    if reason == "interrupted":
        return "interrupted (the app closed while this answer was streaming)"
    if reason == "cancelled":
        return "stopped"
    if reason == "length":
        return "context full" if m.get("context_full") else "hit max tokens"
    return ""


def figures_line(metrics: dict | None) -> str:
    m = metrics or {}
    parts = []
    if m.get("completion_tokens") is not None:
        n = m["completion_tokens"]
        parts.append(f"{n} token{'s' if n != 1 else ''}")
    if m.get("tokens_per_s"):
        parts.append(f"{m['tokens_per_s']:.1f} tok/s")
    if m.get("ttft_s") is not None:
        parts.append(f"TTFT {format_ms(m['ttft_s'])}")
    if m.get("cached_prompt_tokens"):
        parts.append(f"{m['cached_prompt_tokens']}/{m.get('prompt_tokens', '?')} prompt tokens cached")
    if m.get("acceptance_rate") is not None:
        parts.append(f"acceptance {m['acceptance_rate'] * 100:.0f}%")
    stopped = why_it_stopped(m)
    if stopped:
        parts.append(stopped)
    dropped = m.get("dropped_messages") or 0
    if dropped:
        ctx = m.get("context_tokens")
        within = f" to fit the {ctx:,}-token context" if ctx else " to fit the model's context"
        parts.append(f"{dropped} earliest message{'s' if dropped != 1 else ''} left out{within}")
    return SEP.join(parts)


def spans_line(spans: list | None, completion_tokens: int | None) -> str:
    """'tokens 0–40: kv on · 41–120: kv off, nf4' when an answer ran under more than one
    configuration: only the parts of the label that changed between spans are named."""
    spans = [(int(s[0]), str(s[1])) for s in spans or [] if isinstance(s, (list, tuple)) and len(s) == 2]
    if len(spans) < 2:
        return ""
    split = [label.split(SEP) for _first, label in spans]
    width = max(len(parts) for parts in split)
    changing = [i for i in range(width)
                if len({parts[i] if i < len(parts) else "" for parts in split}) > 1]
    out = []
    for n, ((first, _label), parts) in enumerate(zip(spans, split)):
        end = spans[n + 1][0] - 1 if n + 1 < len(spans) else (completion_tokens or first + 1) - 1
        shown = ", ".join(parts[i] for i in changing if i < len(parts)) or "same settings"
        prefix = "tokens " if n == 0 else ""
        out.append(f"{prefix}{first}–{max(first, end)}: {shown}")
    return SEP.join(out)


def footer_lines(metrics: dict | None, config: dict | None) -> tuple[str, str]:
    """(figures, configuration) lines under an answer."""
    m = metrics or {}
    c = config or {}
    config_parts = [x for x in (c.get("label"), c.get("model"), c.get("sampling")) if x]
    line = SEP.join(config_parts)
    spans = spans_line(c.get("spans"), m.get("completion_tokens"))
    if spans:
        line = f"{line}\nran under: {spans}" if line else f"ran under: {spans}"
    return figures_line(m), line
