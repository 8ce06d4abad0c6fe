"""Markdown of untrusted model output to safe HTML, for stored answers.

The chat page renders live answers in the browser with `static/assistant/markdown.js`,
which implements the same policy with markdown-it and DOMPurify; both must give the same
HTML for the same text (tests/browser/test_markdown.py compares them). A change here
needs the same change there.

The policy:
- CommonMark with tables and strikethrough; no raw HTML (shown as text), no linkify,
  single newlines are line breaks.
- Links only to http(s):// and mailto: addresses, always opening in a new tab with
  rel="noopener noreferrer nofollow" and no title; any other link stays plain text.
- Never an image: `![alt](url)` becomes a link reading "alt" (or the URL), so a
  prompt-injected image cannot load anything by itself.
- Code blocks keep a `language-<name>` class when the name is plain (letters, digits,
  `+#-`); highlighting happens in the browser. Table alignment is a class, not a style.
- Then an allowlist sanitizer (nh3) on the result, in case any rule above has a gap.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

LINK_REL = "noopener noreferrer nofollow"
ALLOWED_LINK = re.compile(r"(?:https?://|mailto:)", re.IGNORECASE)
# The first word of a fence's info string, if it is a plain language name.
CODE_LANGUAGE = re.compile(r"[ \t]*([A-Za-z0-9+#-]{1,32})(?:[ \t]|$)")
ALIGNMENTS = {
    "text-align:left": "align-left",
    "text-align:center": "align-center",
    "text-align:right": "align-right",
}

ALLOWED_TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
# rel and target are set by the sanitizer itself, whatever the input says. "*" is empty:
# nh3 would otherwise allow lang and title everywhere.
ALLOWED_ATTRIBUTES = {
    "*": set(),
    "a": {"href", "class"},
    "code": {"class"},
    "ol": {"start"},
    "td": {"class"},
    "th": {"class"},
}
ALLOWED_CLASSES = {
    "a": re.compile(r"image-link"),
    "code": re.compile(r"language-[a-z0-9+#-]{1,32}"),
    "td": re.compile(r"align-(?:left|center|right)"),
    "th": re.compile(r"align-(?:left|center|right)"),
}


def _validate_link(url: str) -> bool:
    # markdown-it passes the normalised (percent-encoded) URL: "java\tscript:" arrives as
    # "java%09script:" and fails here like every other scheme.
    return ALLOWED_LINK.match(url) is not None


def _policy_rule(state: StateCore) -> None:
    """Plain language names on code fences; table alignment as a class; no empty links."""
    for token in state.tokens:
        if token.type == "fence":
            match = CODE_LANGUAGE.match(token.info)
            token.info = match.group(1).lower() if match else ""
        elif token.type in ("th_open", "td_open"):
            style = token.attrs.pop("style", None)
            if style in ALIGNMENTS:
                token.attrJoin("class", ALIGNMENTS[style])
        elif token.type == "inline":
            _hide_empty_links(token.children or [])


def _hide_empty_links(children: Sequence[Token]) -> None:
    # markdown-it keeps "[x]()" as a link to "" (the only destination validateLink does not
    # see): its text stays, the link goes.
    opened: list[Token] = []
    for token in children:
        if token.type == "link_open":
            token.hidden = not ALLOWED_LINK.match(str(token.attrGet("href") or ""))
            opened.append(token)
        elif token.type == "link_close" and opened:
            token.hidden = opened.pop().hidden


def _inside_link(tokens: Sequence[Token], idx: int) -> bool:
    depth = 0
    for token in tokens[:idx]:
        if token.type == "link_open" and not token.hidden:
            depth += 1
        elif token.type == "link_close" and not token.hidden:
            depth -= 1
    return depth > 0


def _plain_text(tokens: Sequence[Token] | None) -> str:
    """An image's description as text (markdown-it's renderInlineAsText differs by port)."""
    parts = []
    for token in tokens or []:
        if token.type in ("text", "text_special", "code_inline"):
            parts.append(token.content)
        elif token.type == "image":
            parts.append(_plain_text(token.children))
        elif token.type in ("softbreak", "hardbreak"):
            parts.append("\n")
    return "".join(parts)


class _PolicyRenderer(RendererHTML):
    def link_open(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        token = tokens[idx]
        if token.hidden:
            return ""
        token.attrs.pop("title", None)
        token.attrSet("target", "_blank")
        token.attrSet("rel", LINK_REL)
        return self.renderToken(tokens, idx, options, env)

    def image(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        token = tokens[idx]
        src = str(token.attrGet("src") or "")
        text = escapeHtml(_plain_text(token.children) or src)
        if not ALLOWED_LINK.match(src) or _inside_link(tokens, idx):
            return text  # no empty link, no link inside a link
        return f'<a href="{escapeHtml(src)}" class="image-link" target="_blank" rel="{LINK_REL}">{text}</a>'


def _build_parser() -> MarkdownIt:
    parser = MarkdownIt(
        "commonmark",
        {"html": False, "linkify": False, "typographer": False, "breaks": True},
        renderer_cls=_PolicyRenderer,
    ).enable(["table", "strikethrough"])
    parser.validateLink = _validate_link  # type: ignore[method-assign]
    parser.core.ruler.push("assistant_policy", _policy_rule)
    return parser


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    if attribute == "class":
        pattern = ALLOWED_CLASSES.get(tag)
        return value if pattern and pattern.fullmatch(value) else None
    if attribute == "href":
        # Stricter than url_schemes: "https:host" (no slashes) is not a link either.
        # Trimmed first, as browsers (and DOMPurify) do.
        value = value.strip(" \t\n\r\f")
        return value if ALLOWED_LINK.match(value) else None
    return value


_parser = _build_parser()
_cleaner = nh3.Cleaner(
    tags=ALLOWED_TAGS,
    attributes=ALLOWED_ATTRIBUTES,
    attribute_filter=_filter_attribute,
    link_rel=LINK_REL,
    set_tag_attribute_values={"a": {"target": "_blank"}},
    url_schemes={"http", "https", "mailto"},
    url_relative="deny",
    strip_comments=True,
)


def sanitize_html(html: str) -> str:
    """`html` reduced to the allowlist of rendered Markdown (no Markdown parsing)."""
    return _cleaner.clean(html)


def render_markdown(text: str) -> SafeString:
    """Sanitized HTML for Markdown `text` from a model (or any other untrusted source)."""
    return mark_safe(sanitize_html(_parser.render(text)))  # noqa: S308 - sanitized just now


# Changes whenever the rendering or the sanitizing changes: stored HTML is then stale.
RENDERER_VERSION = "1"


def html_key(text: str) -> str:
    """What stored HTML was rendered from: this renderer and exactly this text."""
    return hashlib.sha256(f"{RENDERER_VERSION}\0{text}".encode()).hexdigest()[:32]


def rendered_fields(text: str) -> dict[str, str]:
    """An answer's `html` and `html_key` for its final `text` (stored with it)."""
    return {"html": render_markdown(text), "html_key": html_key(text)}


def answer_html(message) -> SafeString:
    """An answer's sanitized HTML: as stored when it still matches its text and this
    renderer, else rendered now (an answer from before, or a renderer since changed)."""
    if message.html_key and message.html_key == html_key(message.content):
        return mark_safe(message.html)  # noqa: S308 - sanitized when it was stored
    return render_markdown(message.content)
