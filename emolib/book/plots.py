"""Plotly figures that draw offline: in JupyterLab, in the rendered book, and under nbval.

Importing this module registers the renderer "emolib" and makes it the default. Each figure is
emitted as two representations:
- `application/vnd.plotly.v1+json`, which JupyterLab draws natively;
- `text/html` with `include_plotlyjs=False` and a div id derived from the figure's content (stable
  across runs, so executed notebooks diff cleanly). The book loads one local copy of plotly.js for
  all pages (see `emolib.book.runner.vendor_assets`), so pages stay small and need no CDN.

Every float a figure carries is rounded to `FIGURE_DIGITS` significant digits and written as a plain
JSON number (never plotly's base64 `bdata`): a figure is read by eye and by hover labels, and the last
bits of a float differ between CPUs (AVX-512 vs AVX2 kernels, OpenBLAS core types). Rounded decimals
keep the executed notebooks small and let the tests compare them at a stated precision
(`tests/nbval_tolerance.py`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.io._base_renderers import MimetypeRenderer, PlotlyRenderer

from ..analysis.geometry import linkage
from ..analysis.reliability import supported_extrapolation
from ..steering.experiments import projection_shift

VALENCE_SCALE = "RdBu"  # red = unpleasant, blue = pleasant


FIGURE_DIGITS = 6  # significant digits of every float a figure carries


def _round_float(value: float) -> float | int:
    """Integral floats become ints (compared exactly); others keep `FIGURE_DIGITS` significant digits."""
    if not math.isfinite(value):
        return value
    value = float(f"{value:.{FIGURE_DIGITS}g}")  # round first: 2.9999999999999996 is 3, like 3.0
    return int(value) if value == int(value) and abs(value) < 1e15 else value


def decode_typed_array(array: dict) -> np.ndarray:
    """A plotly typed array ({"dtype", "bdata", "shape"}) as numpy."""
    values = np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
    shape = array.get("shape")
    if shape:
        values = values.reshape([int(n) for n in str(shape).split(",")])
    return values


def rounded(obj: Any) -> Any:
    """A figure (dict) with numpy arrays and typed arrays as lists, and every float rounded to
    `FIGURE_DIGITS` significant digits; integers, strings and structure untouched."""
    if isinstance(obj, dict):
        if "bdata" in obj and "dtype" in obj:
            return rounded(decode_typed_array(obj))
        return {key: rounded(value) for key, value in obj.items()}
    if isinstance(obj, np.ndarray):
        return rounded(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [rounded(value) for value in obj]
    if isinstance(obj, (float, np.floating)):
        return _round_float(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


class BookRenderer(MimetypeRenderer):
    def to_mimebundle(self, fig_dict: dict) -> dict[str, Any]:
        fig_dict = rounded(fig_dict)
        bundle = PlotlyRenderer(config={"displaylogo": False}).to_mimebundle(fig_dict)
        digest = hashlib.sha1(json.dumps(fig_dict, sort_keys=True, default=str).encode()).hexdigest()[:12]
        bundle["text/html"] = pio.to_html(fig_dict, include_plotlyjs=False, full_html=False, div_id=f"fig-{digest}",
                                          config={"displaylogo": False, "responsive": True})
        return bundle


pd.set_option("display.max_colwidth", 200)  # settings and example texts read whole in tables
pio.renderers["emolib"] = BookRenderer()
pio.renderers.default = "emolib"
pio.templates.default = "plotly_white"


def bar(frame, x: str, y: str, title: str, *, color: str | None = None, hover: list[str] | None = None,
        x_title: str | None = None, y_title: str | None = None, height: int = 420) -> go.Figure:
    """A labelled bar chart (the chapters' counts and rates)."""
    import plotly.express as px

    fig = px.bar(frame, x=x, y=y, color=color, hover_data=hover, title=title, height=height)
    fig.update_layout(xaxis_title=x_title or x, yaxis_title=y_title or y, margin=dict(t=60, l=60, r=20, b=80))
    return fig


def histogram(frame, x: str, title: str, *, color: str | None = None, nbins: int = 40,
              x_title: str | None = None, vline: float | None = None, vline_label: str = "") -> go.Figure:
    import plotly.express as px

    colours = STATUS_COLOURS if color == "status" else None
    fig = px.histogram(frame, x=x, color=color, nbins=nbins, title=title, barmode="overlay", opacity=0.75,
                       color_discrete_map=colours)
    fig.update_layout(xaxis_title=x_title or x, yaxis_title="count", margin=dict(t=60, l=60, r=20, b=60))
    if vline is not None:
        fig.add_vline(x=vline, line_dash="dash", line_color="black", annotation_text=vline_label)
    return fig


def settings_table(settings: dict[str, Any]):
    """A run's settings as a two-column table (the book hides papermill's parameter cells)."""
    return pd.DataFrame({"value": [str(v) for v in settings.values()]}, index=pd.Index(list(settings), name="setting"))


STATUS_COLOURS = {"kept": "#2a9d8f", "leak": "#e76f51", "short": "#e9c46a", "empty": "#8d99ae",
                  "emotional": "#f4a261", "malformed": "#6d597a"}


def status_by_emotion(stories, title: str) -> go.Figure:
    """Stacked counts per emotion (kept / leak / short / empty), emotions ordered by kept stories."""
    import plotly.express as px

    counts = stories.groupby(["emotion", "status"]).size().rename("stories").reset_index()
    kept = counts[counts["status"] == "kept"].set_index("emotion")["stories"]
    order = sorted(counts["emotion"].unique(), key=lambda e: (-kept.get(e, 0), e))
    fig = px.bar(counts, x="emotion", y="stories", color="status", title=title, height=460,
                 category_orders={"emotion": order, "status": [s for s in STATUS_COLOURS if s in set(counts["status"])]},
                 color_discrete_map=STATUS_COLOURS)
    fig.update_layout(xaxis_title="emotion (ordered by kept stories)", yaxis_title="stories", bargap=0.15,
                      margin=dict(t=60, l=60, r=20, b=110))
    fig.update_xaxes(tickangle=-60, tickfont=dict(size=9))
    return fig


def lines(frame, x: str, y: str, title: str, *, color: str | None = None, x_title: str | None = None,
          y_title: str | None = None, markers: bool = True, height: int = 400) -> go.Figure:
    import plotly.express as px

    fig = px.line(frame, x=x, y=y, color=color, markers=markers, title=title, height=height)
    fig.update_layout(xaxis_title=x_title or x, yaxis_title=y_title or y, margin=dict(t=60, l=60, r=20, b=60))
    return fig


def variance_curves(pcs, n_components: int = 20, variance: float = 0.5) -> go.Figure:
    """Cumulative neutral variance explained by the first components, one line per layer, with the cut."""
    fig = go.Figure()
    for slot, layer in enumerate(pcs.layers):
        cumulative = pcs.cumulative(slot)[:n_components].tolist()
        fig.add_trace(go.Scatter(x=list(range(1, len(cumulative) + 1)), y=cumulative, mode="lines+markers",
                                 name=f"layer {layer} (k={pcs.k[slot]})",
                                 hovertemplate=f"layer {layer}<br>%{{x}} components: %{{y:.1%}}<extra></extra>"))
    fig.add_hline(y=variance, line_dash="dash", annotation_text=f"{variance:.0%} of neutral variance")
    fig.update_layout(title="Neutral variance explained by the top principal components", height=440,
                      xaxis_title="components", yaxis_title="cumulative share of variance", yaxis_tickformat=".0%",
                      margin=dict(t=60, l=60, r=20, b=60))
    return fig


def heatmap(matrix, labels: list[str], title: str, *, zmin: float = -1.0, zmax: float = 1.0,
            colorscale: str = VALENCE_SCALE, height: int = 520, y_labels: list[str] | None = None,
            value: str = "cosine") -> go.Figure:
    """A labelled matrix (cosine similarities; rows `y_labels` where they differ from the columns), hover shows
    both names and the value."""
    values = matrix.tolist() if hasattr(matrix, "tolist") else matrix
    fig = go.Figure(go.Heatmap(z=values, x=labels, y=y_labels or labels, zmin=zmin, zmax=zmax, colorscale=colorscale,
                               hovertemplate="%{y} / %{x}: %{z:.2f}<extra></extra>", colorbar=dict(title=value)))
    fig.update_layout(title=title, height=height, margin=dict(t=60, l=100, r=20, b=100),
                      yaxis=dict(autorange="reversed"))
    return fig


def emotion_map(frame, x: str, y: str, title: str, *, color: str | None = None, color_title: str = "",
                hover: list[str] | None = None, label_all: bool = True, height: int = 640) -> go.Figure:
    """Emotions as labelled points (a PCA map); colour by a rating (valence: red unpleasant, blue pleasant)."""
    frame = frame.reset_index()
    customdata = frame[hover].values if hover else None
    hovertemplate = "<b>%{text}</b><br>" + f"{x}: %{{x:.3g}}<br>{y}: %{{y:.3g}}"
    if hover:
        hovertemplate += "".join(f"<br>{h}: %{{customdata[{i}]}}" for i, h in enumerate(hover))
    marker = dict(size=8, line=dict(width=0.5, color="#444"))
    if color is not None:
        values = frame[color]
        marker.update(color=values, colorscale=VALENCE_SCALE, colorbar=dict(title=color_title or color),
                      cmid=float(values.median()) if values.notna().any() else None)
    fig = go.Figure(go.Scatter(x=frame[x], y=frame[y], mode="markers+text" if label_all else "markers",
                               text=frame[frame.columns[0]], textposition="top center", textfont=dict(size=9),
                               marker=marker, customdata=customdata, hovertemplate=hovertemplate + "<extra></extra>"))
    fig.update_layout(title=title, height=height, xaxis_title=x, yaxis_title=y, margin=dict(t=60, l=60, r=20, b=60))
    return fig


def rating_scatter(scores, ratings, title: str, *, x_title: str, y_title: str) -> go.Figure:
    """Component score against human rating, one labelled point per emotion, with the least-squares line."""
    import numpy as np

    xs, ys = np.asarray(ratings, float), np.asarray(scores, float)
    slope, intercept = np.polyfit(xs, ys, 1)
    line = np.array([xs.min(), xs.max()])
    fig = go.Figure([
        go.Scatter(x=xs, y=ys, mode="markers", text=list(ratings.index), marker=dict(size=7, color=xs, colorscale=VALENCE_SCALE),
                   hovertemplate="<b>%{text}</b><br>rating %{x:.2f}<br>score %{y:.3g}<extra></extra>", name="emotions"),
        go.Scatter(x=line, y=slope * line + intercept, mode="lines", line=dict(dash="dash", color="black"), name="fit",
                   hoverinfo="skip"),
    ])
    r = float(np.corrcoef(xs, ys)[0, 1])
    fig.update_layout(title=f"{title} (r = {r:.2f}, n = {len(xs)})", height=420, xaxis_title=x_title, yaxis_title=y_title,
                      showlegend=False, margin=dict(t=60, l=60, r=20, b=60))
    return fig


def circumplex(aligned: pd.DataFrame, title: str, height: int = 640) -> go.Figure:
    """The model's plane after the Procrustes rotation (points, coloured by human valence) with an arrow from
    each word to where the human ratings put it (both standardised): short arrows are agreement."""
    frame = aligned.reset_index()
    fig = go.Figure(go.Scatter(
        x=frame["aligned valence"], y=frame["aligned arousal"], mode="markers+text", text=frame["emotion"],
        textposition="top center", textfont=dict(size=9),
        marker=dict(size=8, color=frame["human valence"], colorscale=VALENCE_SCALE, cmid=0,
                    colorbar=dict(title="human valence (z)"), line=dict(width=0.5, color="#444")),
        customdata=frame[["human valence", "human arousal"]].values,
        hovertemplate="<b>%{text}</b><br>model: (%{x:.2f}, %{y:.2f})<br>human: (%{customdata[0]:.2f}, "
                      "%{customdata[1]:.2f})<extra></extra>", name="model (aligned)"))
    for _, row in frame.iterrows():
        fig.add_annotation(x=row["human valence"], y=row["human arousal"], ax=row["aligned valence"],
                           ay=row["aligned arousal"], xref="x", yref="y", axref="x", ayref="y", showarrow=True,
                           arrowhead=2, arrowsize=0.8, arrowwidth=0.8, arrowcolor="rgba(90,90,90,0.45)", text="")
    fig.update_layout(title=title, height=height, xaxis_title="aligned valence (standardised)",
                      yaxis_title="aligned arousal (standardised)", showlegend=False,
                      margin=dict(t=60, l=60, r=20, b=60))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def dendrogram(vectors, labels: list[str], title: str, n_groups: int | None = None, height: int = 520) -> go.Figure:
    """Hierarchical clustering (average linkage, cosine distance) as a dendrogram, with the chosen cut."""
    import numpy as np
    import plotly.figure_factory as ff

    tree = linkage(vectors)
    n_groups = min(n_groups, len(tree)) if n_groups else n_groups  # a cut needs at least one merge above it
    fig = ff.create_dendrogram(np.asarray(vectors), labels=labels, linkagefun=lambda _: tree,
                               color_threshold=float(tree[-(n_groups - 1), 2]) if n_groups else None)
    if n_groups:
        cut = float((tree[-n_groups, 2] + tree[-(n_groups - 1), 2]) / 2)
        fig.add_hline(y=cut, line_dash="dash", annotation_text=f"{n_groups} groups")
    fig.update_layout(title=title, height=height, yaxis_title="cosine distance", showlegend=False,
                      margin=dict(t=60, l=60, r=20, b=120))
    fig.update_xaxes(tickfont=dict(size=7), tickangle=-90)
    return fig


def band(frame, x: str, y: str, low: str, high: str, title: str, *, color: str | None = None,
         x_title: str | None = None, y_title: str | None = None, height: int = 420) -> go.Figure:
    """Lines with shaded confidence bands, one per `color` group."""
    fig = go.Figure()
    groups = [(None, frame)] if color is None else list(frame.groupby(color, sort=False))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    for i, (name, part) in enumerate(groups):
        colour = palette[i % len(palette)]
        fig.add_trace(go.Scatter(x=list(part[x]) + list(part[x])[::-1], y=list(part[high]) + list(part[low])[::-1],
                                 fill="toself", fillcolor=colour, opacity=0.15, line=dict(width=0), hoverinfo="skip",
                                 showlegend=False))
        fig.add_trace(go.Scatter(x=part[x], y=part[y], mode="lines+markers", name=str(name) if name is not None else y,
                                 line=dict(color=colour)))
    fig.update_layout(title=title, height=height, xaxis_title=x_title or x, yaxis_title=y_title or y,
                      margin=dict(t=60, l=60, r=20, b=60))
    return fig


def rate_bars(frame, x: str, title: str, *, rate: str = "rate", low: str = "low", high: str = "high",
              y_title: str = "share of trials", height: int = 420) -> go.Figure:
    """Rates as bars with asymmetric interval whiskers (e.g. Wilson intervals), with k/n on hover."""
    text = [f"{k}/{n}" for k, n in zip(frame["k"], frame["n"])] if {"k", "n"} <= set(frame.columns) else None
    fig = go.Figure(go.Bar(x=frame[x].astype(str), y=frame[rate], text=text, textposition="outside",
                           error_y=dict(type="data", symmetric=False, array=frame[high] - frame[rate],
                                        arrayminus=frame[rate] - frame[low])))
    fig.update_layout(title=title, height=height, xaxis_title=x, yaxis_title=y_title, yaxis_range=[0, 1.05],
                      margin=dict(t=60, l=60, r=20, b=80))
    return fig


def scaling(curve, fits: dict, title: str, height: int = 460) -> go.Figure:
    """Subsampled r per stories-per-emotion (mean and 95 % band over draws) with each fitted attenuation
    curve drawn out to where it predicts r = 0.8 (or 4x the largest n measured)."""
    import numpy as np

    fig = go.Figure()
    palette = {"r_valence": "#1f77b4", "r_arousal": "#d62728"}
    names = {"r_valence": "r(PC1, valence)", "r_arousal": "r(PC2, arousal)"}
    for measure, colour in palette.items():
        summary = curve.groupby("n")[measure].agg(["mean", lambda s: s.quantile(0.025), lambda s: s.quantile(0.975)])
        summary.columns = ["mean", "low", "high"]
        n = summary.index.to_numpy()
        fig.add_trace(go.Scatter(x=list(n) + list(n)[::-1], y=list(summary["high"]) + list(summary["low"])[::-1],
                                 fill="toself", fillcolor=colour, opacity=0.15, line=dict(width=0), hoverinfo="skip",
                                 showlegend=False))
        fig.add_trace(go.Scatter(x=n, y=summary["mean"], mode="markers+lines", name=f"{names[measure]} (measured)",
                                 line=dict(color=colour)))
        fit = fits.get(measure, {})
        if fit.get("r_inf") is not None:
            needed = supported_extrapolation(fit)  # drawn out that far only where the data set the number
            end = max(4 * n.max(), min(needed or 0, 50 * n.max()))
            grid = np.geomspace(1, end, 80)
            rho = fit["rho"]
            fig.add_trace(go.Scatter(x=grid, y=fit["r_inf"] * np.sqrt(grid * rho / (1 + (grid - 1) * rho)), mode="lines",
                                     name=f"{names[measure]} (fit, r∞ = {fit['r_inf']:.2f})",
                                     line=dict(color=colour, dash="dash")))
    fig.add_hline(y=0.8, line_dash="dot", annotation_text="r = 0.8 (Anthropic's valence: 0.81)")
    fig.update_layout(title=title, height=height, xaxis_type="log", xaxis_title="stories per emotion (log scale)",
                      yaxis_title="Pearson r with human ratings", margin=dict(t=60, l=60, r=20, b=60))
    return fig


def token_heatmap(projection, title: str, *, width: int = 24) -> go.Figure:
    """A passage token by token (rows of `width` tokens) coloured by one emotion's projection, the others'
    on hover: `emolib.analysis.validate.project_tokens` drawn offline."""
    values, tokens = projection.values, projection.tokens
    n_rows = -(-len(tokens) // width)
    pad = n_rows * width - len(tokens)
    grid = np.concatenate([values[0], np.full(pad, np.nan)]).reshape(n_rows, width)
    text = np.array([t.replace("\n", "⏎") for t in tokens] + [""] * pad, dtype=object).reshape(n_rows, width)
    others = ["<br>".join(f"{e}: {v:+.2f}" for e, v in zip(projection.emotions, column)) for column in values.T]
    hover = np.array(others + [""] * pad, dtype=object).reshape(n_rows, width)
    # the first token (<bos>) carries a huge residual: the colour scale is the rest's 98th percentile
    limit = float(np.nanpercentile(np.abs(values[0][1:]), 98)) if len(tokens) > 1 else 1.0
    limit = limit if np.isfinite(limit) and limit > 0 else 1.0
    fig = go.Figure(go.Heatmap(z=grid.tolist(), text=text.tolist(), texttemplate="%{text}", customdata=hover.tolist(),
                               hovertemplate="%{text}<br>%{customdata}<extra></extra>", zmin=-limit, zmax=limit,
                               colorscale=VALENCE_SCALE, colorbar=dict(title=projection.emotions[0])))
    fig.update_layout(title=title, height=90 + 28 * n_rows, margin=dict(t=60, l=20, r=20, b=20),
                      xaxis=dict(visible=False), yaxis=dict(visible=False, autorange="reversed"))
    return fig


def label_heatmap(by_label, top: int = 15) -> go.Figure:
    """Mean projection per label for the `top` emotions whose mean varies most across labels."""
    spread = by_label.std(axis=0).sort_values(ascending=False).index[:top]
    values = by_label[spread]
    fig = heatmap(values.round(2).values, list(spread), title=f"Mean projection by label ({top} most label-dependent emotions)",
                  zmin=float(values.values.min()), zmax=float(values.values.max()), height=420)
    fig.update_yaxes(tickvals=list(range(len(by_label))), ticktext=list(by_label.index))
    fig.data[0].y = list(by_label.index)
    return fig


DOSE_PANELS = {  # metric: (title, y axis)
    "valence": ("Valence of the continuation (VADER compound, -1..1; 95% CI)", "VADER compound"),
    "lexicon valence": ("Valence of the continuation (mean Warriner valence of its words, 1..9; 95% CI)", "mean word valence"),
    "perplexity": ("Perplexity of the continuation under the unsteered model (95% CI)", "perplexity"),
}


def dose_panel(summary: pd.DataFrame, metric: str, read_layer: int = -1):
    """One dose-response panel: `metric`'s mean and 95% band against α, one line per steered emotion."""
    if metric == "projection":
        return band(projection_shift(summary), x="alpha", y="mean", low="low", high="high", color="emotion",
                    title=f"Projection on the steered emotion at layer {read_layer}, change from alpha 0 (95% CI)",
                    x_title="alpha (x mean residual norm)", y_title="projection change")
    title, y_title = DOSE_PANELS[metric]
    return band(summary[summary.metric == metric], x="alpha", y="mean", low="low", high="high", color="emotion",
                title=title, x_title="alpha (x mean residual norm)", y_title=y_title)
