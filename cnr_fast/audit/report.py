"""Audit report: report.md, a self-contained report.html (PNG figures base64-embedded) and figures/*.png.

Order: the verdict first (verdict.py: one sentence per audited model and the separating measures
behind it) with every model's forget and retain accuracy beside it (the first screen answers "is
the class gone, and does the model still work?"), then the figures (depth curves with the retrained model and the null as a band), then the
tables, then the run, the definitions and the timings. Every number printed comes from the audit
result dict through `fmt` (4 decimals), so the report and results.json agree to the printed precision.
Every file is written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from ..runs import atomic_write_bytes, atomic_write_text
from .metrics import REGISTRY
from .verdict import NULL



def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        return "nan" if isinstance(v, float) and math.isnan(v) else f"{v:.4f}"
    return str(v)


ZONE_WORDS = {"with_retrained": "with retrained", "with_original": "with original", "between": "between",
              "beyond_retrained": "past retrained", "beyond_original": "past original"}


def _verdict_parts(result: dict) -> tuple[list[str], tuple[list[str], list[list[str]]] | None, str]:
    """(sentences, (header, rows) of the separating measures, a note on the rest)."""
    v = result.get("verdict")
    if not v:
        return [], None, ("No verdict: it needs a retrained reference and a null model (a second, "
                          "independently retrained model); `cnr-fast unlearn` trains both by default.")
    sentences = [m["sentence"] + "." for m in v["models"].values()]
    u = result.get("ulira")
    if u and u.get("audited"):
        null = u.get("null") or {}
        sentences.append(f"U-LiRA ({u['pairs']} shadow pairs, {u['n_examples']} forget training examples): AUC "
                         f"{fmt(u['audited']['auc'])} at telling the audited model from the retrained one per "
                         f"example" + (f", {fmt(null['auc'])} for a second retrained model in its place (0.5 = "
                                       "cannot tell)" if null else "")
                         + (f"; {fmt(u['original']['auc'])} for the original, fitted on the shadow originals (the "
                            "attack's reach here)" if u.get("original") else "") + ".")
    k = (u or {}).get("klom")
    if k:
        sentences.append(klom_sentence(k, (u or {}).get("method", "the method")))
    names = list(v["models"])
    head = ["measure", "original", "retrained", "null", "margin"] + names
    rows = []
    for k in v["separating"]:
        e = v["measures"][k]
        cells = []
        for n in names:
            mm = e["models"].get(n)
            cells.append("-" if mm is None else f"{fmt(mm['value'])} ({ZONE_WORDS[mm['zone']]})")
        rows.append([k, fmt(e["original"]), fmt(e["retrained"]), fmt(e["null"]), fmt(e["margin"])] + cells)
    rest = [k for k in v["measures"] if k not in v["separating"]]
    note = (f"Rule: {v['rule']} (resolution 1/sqrt({v['n_forget']}) = {v['resolution']:.3f}). "
            + (f"Measures that do not separate retrained from original on this run, and so say nothing about "
               f"where a model stands: {', '.join(rest)}." if rest else "Every judged measure separates them."))
    return sentences, ((head, rows) if rows else None), note


def _accuracy_table(result: dict) -> tuple[list[str], list[list[str]]] | None:
    """(header, rows): forget and retain test accuracy of every model, shown beside the verdict."""
    metrics = result.get("metrics") or {}
    rows = [[n, fmt(m.get("forget_acc")), fmt(m.get("retain_acc"))] for n, m in metrics.items()
            if "forget_acc" in m or "retain_acc" in m]
    chance = (result.get("references") or {}).get("chance") or {}
    if rows and chance.get("forget_acc") is not None:
        rows.append(["chance", fmt(chance.get("forget_acc")), fmt(chance.get("retain_acc"))])
    return (["model", "forget_acc (test)", "retain_acc (test)"], rows) if rows else None


def _tables(result: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table of the report."""
    metrics = result["metrics"]
    names = list(metrics)
    out = []
    # the registry's headline measures first (Metric.headline, in its order), then every other one
    first = [name for name, m in REGISTRY.items() if m.headline]
    scalars = [k for k in first if any(k in metrics[n] and not isinstance(metrics[n][k], dict) for n in names)]
    dicts = [k for k in first if any(isinstance(metrics[n].get(k), dict) for n in names)]
    for n in names:  # every other metric too, so every number of the dict is in the report
        for k, v in metrics[n].items():
            if isinstance(v, dict) and k not in dicts:
                dicts.append(k)
            elif not isinstance(v, dict) and k not in scalars:
                scalars.append(k)
    head = ["metric"] + names
    rows = [[k] + [fmt(metrics[n].get(k)) for n in names] for k in scalars]
    refs = result.get("references", {})
    if refs.get("chance"):
        head = head + ["chance"]
        rows = [r + [fmt(refs["chance"].get(r[0]))] for r in rows]
    out.append(("Headline (forget-class numbers unless named otherwise)", head, rows))
    for key in dicts:
        keys = []
        for n in names:
            for k in metrics[n].get(key, {}) or {}:
                if k not in keys:
                    keys.append(k)
        if not keys:
            continue
        rows = [[n] + [fmt(metrics[n].get(key, {}).get(k)) for k in keys] for n in names]
        null = (refs.get("cka_null") or {}).get({"cka_pos": "pos", "cka_neg": "neg"}.get(key, ""), None)
        if null:  # what two independently trained networks score: "unrelated" at each tap
            rows.append(["null (retrained vs 2nd retrained)"] + [fmt(null.get(k)) for k in keys])
        out.append((key, ["model"] + keys, rows))
    u = result.get("ulira")
    if u:
        cols = ["auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "acc_at_0", "n_pos", "n_neg"]
        rows = [[label] + [fmt(u[part].get(c)) for c in cols] for part, label in
                (("audited", f"{u['method']} (audited) vs retrained"), ("null", "2nd retrained (null) vs retrained"),
                 ("original", "original vs retrained (the attack's reach; fitted on the shadow originals)"),
                 ("shadows", f"shadows, leave-one-out ({u['pairs']} pairs)")) if u.get(part)]
        out.append((f"U-LiRA: per-example likelihood ratio, {u['pairs']} shadow pairs (seeds {u['shadow_seeds']}), "
                    f"{u['time_s']:.0f} s", ["attack"] + cols, rows))
        if u.get("klom"):
            out.append(klom_table(u["klom"], u["method"]))
    att = result.get("attention_heads")
    if att:  # ViT: Table 6
        groups = list(next(iter(att["models"].values()))["groups"])
        rows = [[n] + [fmt(v["groups"][k]) for k in groups] + [fmt(v["global"]), fmt(v["change"]["global"])]
                for n, v in att["models"].items()]
        out.append((f"Attention heads (paper Table 6): the class token's attention mass at block {att['layer']} on the "
                    f"{att['patches']['k']} of {att['patches']['n_patches']} patches that matter most to the original "
                    f"({att['patches']['method']}), mean over {att['n_examples']} forget examples; uniform attention "
                    f"gives {att['uniform']:.3f}", ["model"] + groups + ["global", "change (global)"], rows))
    dist = refs.get("distance_to_retrained")
    if dist:
        keys = [k for k in ("forget_acc", "retain_acc", "probe_acc", "transfer_probe_acc", "fewshot_probe_acc",
                            "relearn_acc", "mia_acc", "nn_purity", "cka_neg", "cka_pos") if any(k in d for d in dist.values())]
        rows = [[n] + [fmt(dist[n].get(k)) for k in keys] for n in dist]
        out.append((f"Distance to the retrained model ({refs.get('retrained')}); per-tap / per-n metrics: mean |difference|",
                    ["model"] + keys, rows))
    return out


KLOM_SPLITS = ("forget", "retain", "val", "val_forget_classes", "val_retain_classes")


def klom_sentence(k: dict, method: str) -> str:
    """One sentence on KLOM (audit/klom.py) over U-LiRA's shadow pairs, for the verdict's list."""
    a, o, n = k["audited"], k.get("original") or {}, k.get("null")
    return (f"KLOM (Easy Data Unlearning Bench: P95 over examples of the KL between the margin histograms of "
            f"{k['pairs']} {method} shadows and {k['pairs']} retrained shadows; 0 = same distributions): forget "
            f"{fmt(a.get('forget'))}, retain {fmt(a.get('retain'))}, held-out {fmt(a.get('val'))}"
            + (f"; the shadow originals in its place: forget {fmt(o.get('forget'))}" if o else "")
            + (f"; at {n['k']} models a side, {fmt(n['audited'].get('forget'))} for {method} against "
               f"{fmt(n['null'].get('forget'))} for retrained against retrained (the floor with this few models)"
               if n else "") + ".")


def klom_table(k: dict, method: str) -> tuple[str, list[str], list[list[str]]]:
    """(title, header, rows) of KLOM's P95 per split: the method, the originals and the split-half null."""
    cols = [c for c in KLOM_SPLITS if c in k["audited"]]
    rows = [[f"{method} shadows vs retrained shadows"] + [fmt(k["audited"].get(c)) for c in cols]]
    if k.get("original"):
        rows.append(["shadow originals vs retrained shadows"] + [fmt(k["original"].get(c)) for c in cols])
    n = k.get("null")
    if n:
        h = n["k"]
        rows.append([f"{method}, first {h} vs retrained, last {h}"] + [fmt(n["audited"].get(c)) for c in cols])
        rows.append([f"retrained, first {h} vs last {h} (null)"] + [fmt(n["null"].get(c)) for c in cols])
    ex = k.get("examples", {})
    return (f"KLOM (Easy Data Unlearning Bench): P95 over examples of KL(unlearned || retrained) of the margin "
            f"histograms, {k['pairs']} shadow pairs; examples: "
            + ", ".join(f"{c} {ex[c]}" for c in cols if c in ex) + f" (held-out split: {k.get('held_out_split')})",
            ["models"] + cols, rows)


# ----------------------------------------------------------------------------------------- figures


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _figures(result: dict) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    metrics = result["metrics"]
    names = list(metrics)
    taps = result.get("settings", {}).get("taps") or list(next(iter(metrics.values()))["probe_acc"])
    figs: dict[str, bytes] = {}
    # probe / decoder / CKA curves over depth
    refs = result.get("references", {})
    band = [n for n in (refs.get("retrained"), NULL) if n in metrics]
    lines = [n for n in names if n not in band]
    panels = [k for k in ("cka_neg", "probe_acc", "knn_acc", "svm_acc", "nn_purity_by_layer", "cka_pos",
                          "transfer_probe_acc") if all(isinstance(metrics[n].get(k), dict) for n in lines)]
    if panels:
        cols = 2
        rows_n = (len(panels) + cols - 1) // cols
        fig, axes = plt.subplots(rows_n, cols, figsize=(6.5 * cols, 4.2 * rows_n), squeeze=False)
        x = np.arange(len(taps))
        for i, key in enumerate(panels):
            ax = axes[i // cols][i % cols]
            have = [n for n in band if isinstance(metrics[n].get(key), dict)]
            if have:  # the models that never saw the class: the band an unlearned model should fall in
                vals = np.array([[metrics[n][key].get(t, np.nan) for t in taps] for n in have], dtype=float)
                ax.fill_between(x, np.nanmin(vals, 0), np.nanmax(vals, 0), color="tab:green", alpha=0.25,
                                label="retrained / null" if len(have) > 1 else "retrained")
                ax.plot(x, vals[0], color="tab:green", lw=1)
            for n in lines:
                style = dict(color="black", ls="--") if n == refs.get("original") else {}
                ax.plot(x, [metrics[n][key].get(t, np.nan) for t in taps], marker="o", label=n, **style)
            ax.set_xticks(x, taps)
            ax.set_title(key, fontsize=12)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=9)
        for j in range(len(panels), rows_n * cols):
            axes[j // cols][j % cols].axis("off")
        fig.tight_layout()
        figs["depth_curves.png"] = _png(fig)
    # selectivity depth profile
    if all("selectivity_delta" in metrics[n] for n in names):
        fig, ax = plt.subplots(figsize=(5, 3))
        for n in names:
            ax.plot(taps, [metrics[n]["selectivity_delta"].get(t, np.nan) for t in taps], marker="o", label=n)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title("selectivity delta (model - original) on the original's top-K forget units")
        ax.legend(fontsize=7)
        figs["selectivity_profile.png"] = _png(fig)
    fd = result.get("_figures") or {}
    forget = set(fd.get("forget", []))
    if fd.get("tsne"):
        rows = [n for n in names if n in fd["tsne"]]
        fig, axes = plt.subplots(len(rows), len(taps), figsize=(2.2 * len(taps), 2.2 * len(rows)), squeeze=False)
        lab = np.asarray(fd["tsne_labels"])
        is_f = np.isin(lab, list(forget))
        for i, n in enumerate(rows):
            for j, t in enumerate(taps):
                ax = axes[i][j]
                e = fd["tsne"][n].get(t)
                if e is not None:
                    ax.scatter(e[~is_f, 0], e[~is_f, 1], c=lab[~is_f], cmap="tab10", s=3, alpha=0.5, vmin=0, vmax=9)
                    ax.scatter(e[is_f, 0], e[is_f, 1], c="black", s=8, marker="x", label="forget")
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(t)
                if j == 0:
                    ax.set_ylabel(n)
        figs["tsne.png"] = _png(fig)
    if fd.get("gradcam"):
        rows = [n for n in names if n in fd["gradcam"]]
        cam_taps = [t for t in ("L3", "L4") if any(t in fd["gradcam"][n] for n in rows)]
        imgs = np.asarray(fd["gradcam_images"])
        k = len(imgs)
        if k and cam_taps:
            fig, axes = plt.subplots(len(rows) * len(cam_taps), k, figsize=(1.4 * k, 1.5 * len(rows) * len(cam_taps)),
                                     squeeze=False)
            for i, n in enumerate(rows):
                for ti, t in enumerate(cam_taps):
                    r = i * len(cam_taps) + ti
                    cams = fd["gradcam"][n].get(t)
                    for j in range(k):
                        ax = axes[r][j]
                        img = imgs[j].transpose(1, 2, 0).astype(np.float32) / 255.0
                        ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray")
                        if cams is not None:
                            ax.imshow(cams[j], cmap="jet", alpha=0.45, vmin=0, vmax=1)
                        ax.set_xticks([])
                        ax.set_yticks([])
                        if j == 0:
                            ax.set_ylabel(f"{n}\n{t}", fontsize=7)
            figs["gradcam.png"] = _png(fig)
    return figs


# ----------------------------------------------------------------------------------------- writers


def _md_table(head, rows) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(head, rows) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def write_report(out_dir, result: dict, extra: dict) -> list[str]:
    """Write report.md, report.html and figures/*.png under out_dir; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = _tables(result)
    try:
        figs = _figures(result)
    except ImportError:  # matplotlib missing: tables only
        figs = {}
    written = []
    for name, data in figs.items():
        atomic_write_bytes(out / "figures" / name, data)
        written.append(str(out / "figures" / name))
    settings = result.get("settings", {})
    defs = result.get("definitions", {})
    title = "cnr-fast audit"
    intro = (f"Dataset {settings.get('dataset')}, forget classes {settings.get('forget')}, taps "
             f"{', '.join(settings.get('taps', []))}; probe-train {settings.get('probe_train_size')} examples "
             f"(class-stratified subset of the training split), test {settings.get('test_size')} examples. "
             f"Features: {settings.get('reduction')}.")
    sentences, vtable, vnote = _verdict_parts(result)
    # markdown
    acc = _accuracy_table(result)
    md = [f"# {title}", "", intro, "", "## Verdict", ""] + [f"- {x}" for x in sentences] + [""]
    if acc:
        md += [_md_table(*acc), ""]
    if vtable:
        md += [_md_table(*vtable), ""]
    md += [vnote, ""]
    if figs:
        md += ["## Figures", ""] + [f"![{n}](figures/{n})" for n in figs] + [""]
    for t, head, rows in tables:
        md += [f"## {t}", "", _md_table(head, rows), ""]
    if extra:
        md += ["## Run", "", "```json", json.dumps(extra, indent=2, default=str), "```", ""]
    md += ["## Definitions", ""] + [f"- **{k}**: {v}" for k, v in defs.items()] + [""]
    if result.get("timings_s"):
        md += ["## Timings (s)", "", _md_table(["step", "seconds"], [[k, f"{v:.1f}"] for k, v in
                                                                      result["timings_s"].items()]), ""]
    atomic_write_text(out / "report.md", "\n".join(md))
    written.append(str(out / "report.md"))
    # html
    style = ("body{font-family:sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;line-height:1.4}"
             "table{border-collapse:collapse;margin:0.5em 0;font-size:0.9em}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
             "th:first-child,td:first-child{text-align:left}img{max-width:100%}"
             ".verdict{background:#f4f8f4;border-left:6px solid #4a4;padding:0.6em 1.2em;font-size:1.1em}"
             ".note{color:#555;font-size:0.9em}details{margin:0.6em 0}summary{cursor:pointer;font-weight:bold}")
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style>"
              f"</head><body><h1>{title}</h1><p>{html.escape(intro)}</p>")]
    parts.append("<h2>Verdict</h2><div class='verdict'>" + "".join(f"<p>{html.escape(x)}</p>" for x in sentences)
                 + "</div>")
    if acc:
        parts.append(_html_table(*acc))
    if vtable:
        parts.append(_html_table(*vtable))
    parts.append(f"<p class='note'>{html.escape(vnote)}</p>")
    for n, data in figs.items():
        b64 = base64.b64encode(data).decode()
        parts.append(f"<h2>{html.escape(n[:-4])}</h2><img alt='{html.escape(n)}' src='data:image/png;base64,{b64}'>")
    for t, head, rows in tables:
        parts.append(f"<h2>{html.escape(t)}</h2>{_html_table(head, rows)}")
    if extra:
        parts.append(f"<details><summary>Run</summary><pre>{html.escape(json.dumps(extra, indent=2, default=str))}"
                     "</pre></details>")
    parts.append("<h2>Definitions</h2><ul>" + "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in defs.items()) + "</ul>")
    parts.append("</body></html>")
    atomic_write_text(out / "report.html", "\n".join(parts))
    written.append(str(out / "report.html"))
    return written
