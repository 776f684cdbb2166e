"""Figures draw offline: both mimetypes, no CDN, stable ids."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from emolib.book import plots


def test_renderer_emits_json_and_cdn_free_html_with_a_content_id():
    assert pio.renderers.default == "emolib"
    figure = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    bundle = plots.BookRenderer().to_mimebundle(figure.to_dict())
    assert set(bundle) == {"application/vnd.plotly.v1+json", "text/html"}
    html = bundle["text/html"]
    assert "<script src=" not in html and "cdn" not in html.lower()
    again = plots.BookRenderer().to_mimebundle(go.Figure(go.Bar(x=["a", "b"], y=[1, 2])).to_dict())["text/html"]
    other = plots.BookRenderer().to_mimebundle(go.Figure(go.Bar(x=["a", "b"], y=[1, 3])).to_dict())["text/html"]
    assert html == again and html != other


def test_status_chart_orders_emotions_by_kept_stories():
    stories = pd.DataFrame({"emotion": ["sad", "sad", "happy", "happy", "happy"],
                            "status": ["kept", "leak", "kept", "kept", "short"]})
    figure = plots.status_by_emotion(stories, title="t")
    assert list(figure.layout.xaxis.categoryarray) == ["happy", "sad"]
    assert {trace.name for trace in figure.data} == {"kept", "leak", "short"}
