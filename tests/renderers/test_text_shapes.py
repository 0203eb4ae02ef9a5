"""The text alternative made once per shape (renderers.plain_text.TextShapes) is always exactly
what html_to_text makes of the whole body, whatever the template's text and the values."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from renderers.context import build_context
from renderers.plain_text import TextShapes, html_to_text
from renderers.templating import compile_campaign

# Pieces of a template's own text, chosen to put values everywhere the conversion decides
# something: in text, in tag names and attributes, in link URLs and texts, in alt texts, in
# comments and dropped elements, right after "<" or "&", next to whitespace and block tags.
FRAGMENTS = [
    "<p>", "</p>", "<br>", "<li>", "<td>", "<div>", "</div>", "<h1>", "</h1>", "text", " ", "\n", "  ",
    "<a href=\"https://x.example/?c=", "<a href=\"", "<a href='mailto:", "\">", "'>", "</a>", "<a ", "<a",
    "href=", "<img alt=\"", "<img src=\"", "\" alt=\"", "<img alt=", ">", "<", "</", "<!-- ", " -->",
    "<title>", "</title>", "<script>", "</script>", "<style type=\"", "</style>", "&", "&amp", "&amp;",
    "&nbsp;", "x&", "=", "\"", "'", "https://x.example/", "javascript:", "mailto:", "<p title='",
    "<!DOCTYPE html>", "<?xml ?>", "<head>", "</head>", "See it", "<b>", "</b>", "\t", "&#",
    "<a href=\"https://x.example/", "\">https://x.example/p</a>", "<a href=\"mailto:someone@x.example",
    "\">someone@x.example</a>",
]
VALUE_CHARS = st.sampled_from(list("ab Z09.:/#-_@?") + ["<", ">", "&", '"', "'", "=", "\n", "\t", "\xa0",
                                                       "\x00", "\x01", "\ue000", "p", "a", "https://x.example/",
                                                       "javascript:", "mailto:", "title", "script"])
VALUES = st.lists(VALUE_CHARS, max_size=6).map("".join)
LAYOUT = st.lists(st.one_of(st.sampled_from(range(len(FRAGMENTS))), st.just(None)), min_size=1, max_size=24)


def chunks_of(layout: list[int | None], values: list[str]) -> list[str]:
    """The rendering: the fragments themselves (the template's constants) and a fresh string per value."""
    out, given_values = [], iter(values)
    for item in layout:
        out.append(FRAGMENTS[item] if item is not None else "".join(["", next(given_values)]))
    return out


@settings(max_examples=1000, deadline=None)
@given(layout=LAYOUT, first=st.lists(VALUES, min_size=24, max_size=24),
       second=st.lists(VALUES, min_size=24, max_size=24))
@example(layout=[13, None, 14, 11, None, 18], first=["abc"] * 24, second=["Zoë 9"] * 24)
# a link whose URL is its text for one value only: "https://x.example/" + "p"
@example(layout=[58, None, 59], first=["q"] * 24, second=["p"] * 24)
@example(layout=[60, None, 61], first=["q"] * 24, second=[""] * 24)
def test_every_rendering_gets_exactly_html_to_texts_text(layout, first, second):
    shapes = TextShapes(FRAGMENTS)
    for values in (first, second, first):  # the second and third reuse the shape the first made
        chunks = chunks_of(layout, values)
        assert shapes.text(chunks) == html_to_text("".join(chunks))


def test_a_newsletter_is_converted_once_per_shape_and_the_same_text_comes_out():
    compiled = compile_campaign(
        "{{ contact.first_name }}",
        '<h1>Hello {{ contact.first_name }}</h1>{% if contact.custom_fields.tier == "gold" %}<p>Gold: 20%</p>'
        '{% else %}<p>Silver: 10%</p>{% endif %}<p><a href="https://acme.example/s?c={{ contact.id }}">'
        'See the collection</a> in {{ contact.city }}.</p><img alt="{{ contact.first_name }}" src="x.png">',
        "<html><head><title>{{ campaign.name }}</title></head><body><table><tr><td>{{ content }}</td></tr>"
        "</table></body></html>")
    texts = []
    for n, (name, tier) in enumerate([("Anna", "gold"), ("Søren Bo", "silver"), ("Zoë", "gold"),
                                      ("O'Brien", "silver"), ("", "gold")]):
        contact = {"id": f"c{n}", "fixed_fields": {"first_name": name, "city": "Aarhus"},
                   "custom_fields": {"tier": tier}}
        context = build_context(contact, {"id": "k", "name": "Spring news"}, None, None,
                                fixed_field_names=("first_name", "city"))
        rendered = compiled.render(context, footer=False)
        inner = compiled.content.render(context)  # as rendering did before shapes, in one piece
        whole = compiled.wrapper.render({**context, "content": Markup(inner)})
        assert rendered.text == html_to_text(whole)
        texts.append(rendered.text)
    assert texts[0] == ("Hello Anna\n\nGold: 20%\n\nSee the collection (https://acme.example/s?c=c0) in Aarhus."
                        "\n\nAnna\n")
    assert "Søren Bo" in texts[1] and "Silver: 10%" in texts[1]
    # Shapes for gold and silver, reused; an empty name leaves its values out: a third shape. The
    # name with an apostrophe (autoescaped: "&#39;") cannot stand in for its placeholder.
    assert compiled.texts.reused == 4
    assert compiled.texts.converted == 1


def test_past_its_limit_a_new_shape_is_converted_whole_and_the_kept_ones_still_serve():
    shapes = TextShapes(FRAGMENTS, limit=1)
    first, second = [0, None, 1], [4, None, 1]  # "<p>", a value, "</p>"; then "<td>" for "<p>"
    for layout in (first, second, first, second):
        chunks = chunks_of(layout, ["Anna"])
        assert shapes.text(chunks) == html_to_text("".join(chunks))
    assert (shapes.reused, shapes.converted) == (2, 2)
