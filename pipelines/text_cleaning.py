"""HTML removal for item texts, shared by the pipelines and the text features (standard library only,
so a pipeline can clean text without importing TensorFlow)."""

from __future__ import annotations

import html
import re

_HTML_MARKUP = re.compile(
    r"<!--.*?-->|<(script|style)\b[^>]*>.*?</\1\s*>|</?[A-Za-z][^<>]*>",
    flags=re.DOTALL | re.IGNORECASE,
)


def strip_html(text: str) -> str:
    """Removes HTML markup and unescapes entities.

    Tags (`<b>`, `</p>`, `<br/>`), comments and `<script>`/`<style>` elements are replaced by a
    space, then entities are unescaped (`&amp;` -> `&`). This runs twice, so double-escaped entities
    (`&amp;quot;`) and escaped markup (`&lt;br&gt;`), both found in Amazon metadata, go too. A `<`
    not followed by a letter or `/` is kept as text ("a < b").

    >>> strip_html("Red<br/>Lipstick &amp;amp; <i>Gloss</i>")
    'Red Lipstick &  Gloss '
    """
    for _ in range(2):
        text = html.unescape(_HTML_MARKUP.sub(" ", text))
    return text
