"""Sandboxed rendering of campaigns, the template context and the create-time template check."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from renderers.context import build_context, check_template
from renderers.errors import HeaderInjection, RenderError
from renderers.plain_text import html_to_text
from renderers.templating import add_unsubscribe_footer, compile_campaign

FIXED = ("salutation", "first_name", "last_name", "email", "city", "date_of_birth")
UNSUBSCRIBE = "https://acme.example/unsubscribe?c=1&k=2"


def context(first_name="Zoë", *, unsubscribe_url=UNSUBSCRIBE, **contact):
    base = {
        "id": "98388685-4b08-4321-b99c-80a73e620ca8",
        "b2c": True,
        "fixed_fields": {"first_name": first_name, "last_name": "Ørsted", "city": None},
        "custom_fields": {"tier": "gold"},
        "account": {"id": "d442", "name": "Felicity Padberg"},
        "user": {"id": 2555, "first_name": "Noe", "email": "noe@acme.example"},
        "team_id": 1,
        "status": "lead",
        "created_at": datetime(2018, 3, 22, 10, 9, 5, tzinfo=timezone.utc),
    }
    base.update(contact)
    campaign = {"id": "fab657f1", "name": "Spring sale", "budget": 100}
    sender = {"id": 1, "first_name": "Doe", "last_name": "John", "email": "john@acme.example"}
    return build_context(base, campaign, sender, unsubscribe_url, fixed_field_names=FIXED)


def render(content, *, subject=None, wrapper=None, ctx=None, **kwargs):
    return compile_campaign(subject, content, wrapper).render(ctx or context(), **kwargs)


# --- rendering --------------------------------------------------------------------------------


def test_contact_values_are_autoescaped_in_html_but_not_in_subject():
    ctx = context("<script>alert(1)</script> & Co")
    out = render("<p>Hi {{ contact.first_name }}</p>", subject="For {{ contact.first_name }}", ctx=ctx)
    assert "<script>" not in out.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in out.html
    assert out.subject == "For <script>alert(1)</script> & Co"
    assert "Hi <script>alert(1)</script> & Co" in out.text


def test_every_context_name_renders():
    source = (
        "{{ contact.id }}|{{ contact.b2c }}|{{ contact.first_name }}|{{ contact.fixed_fields.last_name }}"
        "|{{ contact.custom_fields.tier }}|{{ contact.account.name }}|{{ contact.user.first_name }}"
        "|{{ contact.team_id }}|{{ contact.status }}|{{ contact.created_at }}|{{ campaign.id }}"
        "|{{ campaign.name }}|{{ sender.email }}|{{ unsubscribe_url }}|{{ contact['first_name'] }}"
    )
    out = render(source, footer=False)
    assert out.html == (
        "98388685-4b08-4321-b99c-80a73e620ca8|True|Zoë|Ørsted|gold|Felicity Padberg|Noe|1|lead"
        "|2018-03-22 10:09:05|fab657f1|Spring sale|john@acme.example"
        "|https://acme.example/unsubscribe?c=1&amp;k=2|Zoë"
    )


def test_none_and_missing_values_render_as_empty_string():
    source = (
        "[{{ contact.city }}][{{ contact.salutation }}][{{ contact.custom_fields.nope }}]"
        "[{{ contact.custom_fields['Favourite colour'] }}][{{ contact.city|upper }}]"
        "[{{ 'x' + contact.city + 'y' }}][{{ contact.city|default('Aarhus') }}]"
        "[{{ contact.custom_fields.nope or 'friend' }}]"
    )
    ctx = build_context({"id": "c1", "fixed_fields": {"city": None}}, {"id": "k"}, None, None,
                        fixed_field_names=FIXED)
    out = render(source, ctx=ctx)
    assert out.html == "[][][][][][xy][Aarhus][friend]"


def test_contact_without_account_user_or_sender_renders_empty_fields():
    ctx = build_context({"id": "c1", "account": None, "user": None}, {"id": "k", "name": "n"},
                        None, None, fixed_field_names=FIXED)
    out = render("[{{ contact.account.name }}][{{ contact.user.email }}][{{ sender.first_name }}]",
                 ctx=ctx)
    assert out.html == "[][][]"


def test_seed_shaped_fixed_fields_list_is_accepted():
    contact = {"id": "c1", "fixed_fields": [{"id": 18, "name": "first_name", "value": "Maegan"},
                                            {"id": 19, "name": "last_name", "value": None}]}
    ctx = build_context(contact, {"id": "k"}, None, None, fixed_field_names=FIXED)
    assert render("{{ contact.first_name }}/{{ contact.last_name }}", ctx=ctx).html == "Maegan/"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ contact.__class__ }}",
        "{{ campaign.name.__class__.__base__.__subclasses__() }}",
        "{{ contact._values }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_sandbox_blocks_escapes(source):
    with pytest.raises(RenderError, match="not allowed|unsafe|undefined"):
        render(source)


def test_huge_repetition_is_refused_before_it_is_built():
    with pytest.raises(RenderError, match="^message.content line 1: repeating a value to more than 2 MiB "
                                          "is not allowed$"):
        render("{{ 'x' * 1000000000 }}")


def test_unknown_name_is_a_render_error_with_its_line():
    with pytest.raises(RenderError, match=r"^message.content line 2: 'foo' is undefined$"):
        render("Hello\n{{ foo }}")


def test_unknown_attribute_names_the_object_and_line():
    with pytest.raises(RenderError) as err:
        render("<p>\nHi\n{{ contact.frist_name }}</p>")
    assert str(err.value) == "message.content line 3: 'contact' has no attribute 'frist_name'"


def test_unknown_attribute_of_campaign_is_refused_even_if_the_dict_had_it():
    with pytest.raises(RenderError, match="'campaign' has no attribute 'budget'"):
        render("{{ campaign.budget }}")


def test_runaway_recursion_is_a_render_error():
    with pytest.raises(RenderError, match="calls itself"):
        render("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}")


def test_output_size_is_capped():
    campaign = compile_campaign(
        None, "{% for i in range(50) %}{% for j in range(1000) %}0123456789{% endfor %}{% endfor %}", None,
        max_output=100_000)
    with pytest.raises(RenderError, match="^message.content: the rendered content would exceed 100000 characters$"):
        campaign.render(context())
    small = compile_campaign(None, "{% for i in range(5000) %}0123456789{% endfor %}", None,
                             max_output=100_000)
    assert len(small.render(context(), footer=False).html) == 50_000


def test_syntax_error_names_part_and_line():
    with pytest.raises(RenderError, match=r"^template line 2: "):
        compile_campaign(None, "ok", "<html>\n{% if %}</html>")
    with pytest.raises(RenderError, match=r"^message.subject line 1: "):
        compile_campaign("{{ contact.first_name ", "ok", None)


def test_wrapper_wraps_the_rendered_content_once_escaped():
    ctx = context("Tom & Jerry")
    out = render("<p>Hi {{ contact.first_name }}</p>", ctx=ctx, footer=False,
                 wrapper="<html><body><div class=\"c\">{{ content }}</div>{{ campaign.name }}</body></html>")
    assert out.html == ('<html><body><div class="c"><p>Hi Tom &amp; Jerry</p></div>'
                        "Spring sale</body></html>")


def test_content_in_a_message_is_an_error_but_available_in_the_wrapper():
    with pytest.raises(RenderError, match="'content' is undefined"):
        render("{{ content }}")


def test_compiled_once_per_campaign():
    first = compile_campaign("S", "<p>{{ contact.id }}</p>", None)
    assert compile_campaign("S", "<p>{{ contact.id }}</p>", None) is first
    assert compile_campaign("S", "<p>{{ contact.id }}!</p>", None) is not first


def test_subject_is_one_line_and_refuses_line_breaks_from_values():
    assert render("x", subject="  Hello {{ contact.first_name }}\n").subject == "Hello Zoë"
    with pytest.raises(HeaderInjection, match="message.subject"):
        render("x", subject="Hello {{ contact.first_name }}", ctx=context("Zoë\r\nBcc: evil@x.example"))


def test_no_subject_renders_empty():
    assert render("x").subject == ""


# --- footer and text alternative ---------------------------------------------------------------


def test_unsubscribe_footer_goes_before_body_end_with_escaped_url():
    out = render("<p>Hi</p>", wrapper="<html><body>{{ content }}</body></html>")
    assert out.html.endswith('<a href="https://acme.example/unsubscribe?c=1&amp;k=2">unsubscribe</a>.</p></body></html>')
    assert out.html.count("unsubscribe?c=1") == 1
    assert "Unsubscribe: https://acme.example/unsubscribe?c=1&k=2" in out.text


def test_footer_is_not_added_twice_when_the_template_links_the_url():
    out = render('<p>Hi</p><a href="{{ unsubscribe_url }}">Stop these</a>')
    assert out.html.count("unsubscribe?c=1") == 1
    assert out.text.count("https://acme.example/unsubscribe?c=1&k=2") == 1


def test_no_footer_without_url_or_when_turned_off():
    assert "unsubscribe" not in render("<p>Hi</p>", ctx=context(unsubscribe_url=None)).html
    assert "unsubscribe" not in render("<p>Hi</p>", footer=False).html


def test_a_letter_renders_the_same_html_without_a_text_alternative():
    source = "<h1>Dear {{ contact.first_name }}</h1><p>Line one<br>line two</p>"
    letter, email = render(source, footer=False, text=False), render(source, footer=False)
    assert letter.html == email.html and letter.text == ""
    assert "Line one\nline two" in email.text


def test_footer_escapes_a_hostile_url():
    html, text = add_unsubscribe_footer("<p>x</p>", "x", 'https://a.example/"><script>x</script>')
    assert "<script>" not in html
    assert 'href="https://a.example/&#34;&gt;&lt;script&gt;x&lt;/script&gt;"' in html or \
        'href="https://a.example/&quot;&gt;&lt;script&gt;x&lt;/script&gt;"' in html


def test_text_alternative_strips_tags_and_keeps_links():
    html = (
        "<html><head><title>T</title><style>p {color: red}</style></head><body>"
        "<h1>Spring&nbsp;sale</h1><p>Hello   Zoë &amp; friends,\n  see\n<a href='https://acme.example/s?a=1&amp;b=2'>our <b>offer</b></a>.</p>"
        "<ul><li>one</li><li>two &lt;3</li></ul><script>if (a<b) {}</script>"
        '<p><a href="https://acme.example/">https://acme.example/</a> <a href="mailto:hi@acme.example">hi@acme.example</a></p>'
        "<p>line<br>break &#233;</p></body></html>"
    )
    assert html_to_text(html) == (
        "Spring sale\n\n"
        "Hello Zoë & friends, see our offer (https://acme.example/s?a=1&b=2).\n\n"
        "- one\n- two <3\n\n"
        "https://acme.example/ hi@acme.example\n\n"
        "line\nbreak é\n"
    )


def test_text_alternative_of_plain_text_and_odd_markup():
    assert html_to_text("") == ""
    assert html_to_text("plain & simple") == "plain & simple\n"
    assert html_to_text("<p>unclosed <a href='x'>link") == "unclosed link\n"
    assert html_to_text('<a href="https://x.example/"><img src="l.png" alt="Logo"></a> 3 < 4') == \
        "Logo (https://x.example/) 3 < 4\n"


# --- check_template -----------------------------------------------------------------------------


def check(source, *, wrapper=False):
    return check_template(source, fixed_fields=FIXED, is_wrapper=wrapper)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Hi\n{% if contact.first_name %}", "line 2: Unexpected end of template"),
        ("{{ foo }}", "line 1: 'foo' is not a known name"),
        ("a\n\n{{ contact.frist_name }}", "line 3: 'contact' has no attribute 'frist_name' (did you mean 'first_name'?)"),
        ("{{ contact.fixed_fields.nope }}", "line 1: 'contact.fixed_fields' has no attribute 'nope'"),
        ("{{ campaign.budget }}", "line 1: 'campaign' has no attribute 'budget'"),
        ("{{ sender.salary }}", "line 1: 'sender' has no attribute 'salary'"),
        ("{{ contact.account.owner }}", "line 1: 'contact.account' has no attribute 'owner'"),
        ("{{ contact.user.salary }}", "line 1: 'contact.user' has no attribute 'salary'"),
        ('{{ contact["frist_name"] }}', "line 1: 'contact' has no attribute 'frist_name'"),
        ("{{ contact['fixed_fields']['nope'] }}", "line 1: 'contact.fixed_fields' has no attribute 'nope'"),
        ("{{ content }}", "line 1: 'content' can only be used in a template"),
        ("{{ ''.__class__.__mro__ }}", "line 1: '__class__' is not allowed"),
        ("{{ contact.__class__ }}", "line 1: '__class__' is not allowed"),
        ("{{ cycler.__init__.__globals__ }}", "line 1: '__init__' is not allowed"),
        ("{% set x = 'a' %}{{ x.__class__ }}", "line 1: '__class__' is not allowed"),
        ("{{ contact.first_name.salary }}", "line 1: 'contact.first_name' is a value; it has no attribute 'salary'"),
        ("{{ contact.first_name|uper }}", "line 1: there is no filter named 'uper' (did you mean 'upper'?)"),
        ("{% if contact.b2c is tru %}x{% endif %}", "line 1: there is no test named 'tru'"),
        ("{% if contact.b2c %}{{ x|nope }}{% endif %}", "line 1: there is no filter named 'nope'"),
        ("{% include 'footer.html' %}", "line 1: a template cannot extend, include or import"),
        ("{% extends 'base.html' %}", "line 1: a template cannot extend, include or import"),
        ("{{ caller() }}", "line 1: 'caller' is not a known name"),
        ("{% block a %}{% endblock %}{% block a %}{% endblock %}", "line 1: block 'a' defined twice"),
    ],
)
def test_check_template_finds_problem(source, expected):
    problems = check(source)
    assert any(p.startswith(expected) for p in problems), problems


def test_check_template_reports_every_problem_with_its_line():
    problems = check("{{ foo }}\n{{ contact.nope }}\n{{ campaign.budget }}")
    assert [p.split(":")[0] for p in problems] == ["line 1", "line 2", "line 3"]


@pytest.mark.parametrize(
    "source",
    [
        "",
        "plain text, no tags",
        "Hi {{ contact.first_name|default('there', true) }} {{ contact.last_name|upper }}",
        "{{ contact.fixed_fields.email }} {{ contact['city'] }} {{ contact.date_of_birth }}",
        "{{ contact.custom_fields.anything }} {{ contact.custom_fields['Any name at all'] }}",
        "{{ contact.custom_fields.tier.upper() }} {{ contact.first_name.strip() }}",
        "{{ contact.id }} {{ contact.b2c }} {{ contact.team_id }} {{ contact.status }} {{ contact.created_at }}",
        "{{ contact.account.id }} {{ contact.account.name }} {{ contact.user.email }} {{ contact.user.job_title }}",
        "{{ campaign.id }} {{ campaign.name }} {{ sender.first_name }} {{ sender.phone_number }}",
        '<a href="{{ unsubscribe_url }}">unsubscribe</a>',
        "{% set greeting = 'Hi' %}{{ greeting }} {% for k in contact.custom_fields %}{{ k }}{{ loop.index }}{% endfor %}",
        "{% macro hello(name) %}Hi {{ name }} {{ caller() }}{% endmacro %}{% call hello(contact.first_name) %}!{% endcall %}",
        "{% set ns = namespace(n=0) %}{% set ns.n = ns.n + 1 %}{{ ns.n }} {{ range(3)|list }}",
        "{% for key in ['first_name', 'city'] %}{{ contact[key] }}{% endfor %}",
    ],
)
def test_check_template_accepts_valid_templates(source):
    assert check(source) == []


def test_check_template_accepts_content_in_a_wrapper():
    assert check("<html><body>{{ content }}</body></html>", wrapper=True) == []


def test_checked_templates_render():
    source = ("{% macro hello(name) %}Hi {{ name }} {{ caller() }}{% endmacro %}"
              "{% call hello(contact.first_name) %}!{% endcall %} {{ contact.custom_fields.tier.upper() }}"
              " {% for key in ['first_name', 'city'] %}[{{ contact[key] }}]{% endfor %}")
    assert check(source) == []
    assert render(source, footer=False).html == "Hi Zoë ! GOLD [Zoë][]"


def test_a_plain_none_in_the_context_renders_empty():
    from renderers.templating import compile_template, render_template

    template = compile_template("[{{ x }}][{{ y.z }}]", part="message.content")
    assert render_template(template, {"x": None, "y": {"z": None}}) == "[][]"
