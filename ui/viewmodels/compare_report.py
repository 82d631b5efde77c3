"""The comparison as a Markdown report: settings, provenance, the summary table, each column."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ui.formatting import format_bytes, sampling_label
from ui.viewmodels.compare_format import SUMMARY_COLUMNS, fmt_agreement, fmt_value

if TYPE_CHECKING:
    from ui.viewmodels.compare import ColumnResult, Comparison

LEGEND = ("Speed × above 1 is faster; TTFT ×, TPOT × and memory × below 1 are better. Figures are medians "
          "over the repeats, with the range in brackets; memory is model weights (draft included) plus the "
          "peak KV cache.")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _fence(text: str) -> list[str]:
    return ["~~~~text", text.replace("~~~~", "~ ~ ~ ~"), "~~~~"]


def markdown_report(comp: Comparison, prov: dict) -> str:
    lines = ["# Inference Workbench — comparison", ""]
    s = comp.sampling
    hardware = f" ({prov['hardware']})" if prov.get("hardware") else ""
    versions = (f"Workbench {prov.get('app_version')} · Python {prov.get('python')} · torch {prov.get('torch')} · "
                f"transformers {prov.get('transformers')} · bitsandbytes {prov.get('bitsandbytes')}")
    sampling = (f"{sampling_label(s).split(', seed')[0]}; temperature {s.temperature:g}, top-k {s.top_k}, "
                f"top-p {s.top_p:g}, max {s.max_new_tokens} tokens, seed {s.seed}")
    lines += [
        f"- Created: {prov.get('created', comp.started_at)}",
        f"- {versions}",
        f"- Device: {', '.join(prov.get('devices') or ['?'])}{hardware}",
        f"- Platform: {prov.get('platform')}",
        f"- Run: {comp.describe_run()}" + (" — cancelled before the end" if comp.cancelled else ""),
        f"- Sampling: {sampling}",
        "",
        "## Prompt",
        "",
    ]
    if comp.messages:
        for role, content in comp.messages:
            lines += [f"**{role}**", ""] + _fence(content) + [""]
    else:
        lines += _fence(comp.prompt or "") + [""]
    lines += [f"## Summary (ratios against the baseline column, “{comp.columns[0].spec.name}”)", ""]
    lines.append("| " + " | ".join(h for _, h in SUMMARY_COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in SUMMARY_COLUMNS) + "|")
    for row in comp.summary_rows():
        lines.append("| " + " | ".join(_md_cell(row[k]) for k, _ in SUMMARY_COLUMNS) + " |")
    lines += ["", LEGEND, ""]
    for i, c in enumerate(comp.columns):
        lines += _md_column(comp, i, c)
    return "\n".join(lines) + "\n"


def _md_column(comp: Comparison, i: int, c: ColumnResult) -> list[str]:
    fig = comp.figures(i)
    info = c.model_info
    lines = [f"## Column {i + 1}: {c.spec.name}" + (" (reference)" if i == 0 else ""), ""]
    lines += [
        f"- Preset: {c.spec.preset}",
        f"- Configuration: {c.spec.label}",
        (f"- Configuration (JSON): `{json.dumps(c.spec.config.to_dict(), sort_keys=True)}`" if not c.spec.backend_label
         else "- Backend: a remote server (its settings are its launch flags)"),
        f"- Model: {c.spec.model}",
    ]
    if info is not None:
        params = f"{info.num_params:,}" if info.num_params is not None else "unknown"
        lines.append(f"- Loaded: {info.architecture}, {params} parameters, {info.dtype or 'unknown dtype'}, "
                     f"{info.device}, weights {format_bytes(info.weights_bytes)}")
    lines.append(f"- tok/s {fig['tokens_per_s']} · TTFT {fig['ttft']} · TPOT {fig['tpot']} · weights "
                 f"{fig['weights']} · peak KV {fig['kv']} · acceptance {fig['acceptance']}")
    a = comp.agreement(i)
    if i > 0:
        lines.append(f"- Agreement with the baseline: {fmt_agreement(a)}")
    if not c.consistent:
        lines.append("- Note: the repeats of this column did not all produce the same tokens")
    for err in c.errors:
        lines.append(f"- Error: {err}")
    lines += ["", "| Repeat | tok/s | TTFT | TPOT | Tokens | Weights | Peak KV | Acceptance | Finish |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in c.warmups + c.runs:
        cells = ["warm-up" if r.warmup else str(r.repeat + 1)]
        cells += [fmt_value(m, getattr(r, m)) for m in ("tokens_per_s", "ttft_s", "tpot_s")]
        cells.append(str(r.completion_tokens))
        cells += [fmt_value(m, getattr(r, m)) for m in ("weights_bytes", "peak_kv_bytes", "acceptance_rate")]
        cells.append(r.reason)
        lines.append("| " + " | ".join(cells) + " |")
    out = c.output
    if out is not None:
        where = "" if a is None or a.first_divergence is None or i == 0 else \
            f" (differs from the baseline from token {a.first_divergence})"
        lines += ["", f"Output{where}:", ""] + _fence(out.text)
    lines.append("")
    return lines
