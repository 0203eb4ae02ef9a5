"""The sandbox's limits: each one refused by the create-time check and by rendering, for the same reason."""

from __future__ import annotations

import threading
import time

import pytest

from renderers.context import build_context, check_template, sample_context
from renderers.errors import HeaderInjection, RenderError
from renderers.templating import _BUDGET, SandboxRefusal, compile_campaign

FIXED = ("salutation", "first_name", "last_name", "email", "city", "date_of_birth")

ATTRIBUTE = "'__init__' is not allowed: names starting with '_' are private"
GLOBALS = "'__globals__' is not allowed: names starting with '_' are private"
RANGE = "range() of more than 10000 items is not allowed"
STEPS = "loops of more than 100000 steps in all are not allowed"
OUTPUT = "the rendered content would exceed 2 MiB"
REPEAT = "repeating a value to more than 2 MiB is not allowed"
BUILD = "building a value larger than 2 MiB is not allowed"
NUMBER = "numbers of more than 65536 bits are not allowed"
SLOW = "rendering took longer than 1 s"

NESTED_EMPTY_LOOP = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
EXPONENTIAL = "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}"


def context():
    contact = {"id": "c1", "fixed_fields": {"first_name": "Zoë", "city": "Aarhus"},
               "custom_fields": {"tier": "gold", "colour": "blue"},
               "created_at": "2018-03-22 10:09:05"}
    return build_context(contact, {"id": "k1", "name": "Spring"}, {"first_name": "Bo"},
                         "https://acme.example/u", fixed_field_names=FIXED)


def check(source, **kwargs):
    kwargs.setdefault("is_wrapper", False)
    return check_template(source, fixed_fields=FIXED, **kwargs)


def render(content, *, subject=None, wrapper=None):
    return compile_campaign(subject, content, wrapper).render(context(), footer=False)


def refused_at_render(content, **kwargs) -> SandboxRefusal:
    with pytest.raises(SandboxRefusal) as err:
        render(content, **kwargs)
    return err.value


# (template, line or None, reason): what the check says is "line N: reason" (or the reason), and
# rendering for a recipient raises a SandboxRefusal with the same line and reason.
REFUSED = [
    # attribute access: the sandbox's own rules, met only when rendering (the names are computed)
    ("{{ cycler|attr('__init__') }}", 1, ATTRIBUTE),
    ("Hi\n{{ (cycler|attr('reset'))|attr('__globals__') }}", 2, GLOBALS),
    ("{% set name = '__in' ~ 'it__' %}{{ joiner|attr(name) }}", 1, ATTRIBUTE),
    # range() size
    ("{{ range(10**9) }}", 1, RANGE),
    ("{% for i in range(10001) %}{% endfor %}", 1, RANGE),
    ("{{ range(-(10**30), 10**30) }}", 1, RANGE),
    # loop steps: for-loops, and filters that go over a list item by item
    (NESTED_EMPTY_LOOP, 1, STEPS),
    ("{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}", 1, STEPS),
    ("{{ (('ab' * 60000)|list)|sort|length }}", 1, STEPS),
    # output size, per part
    ("{% for i in range(3000) %}{{ 'x' * 1000 }}{% endfor %}", None, OUTPUT),
    # values built larger than the output could be, refused before they are built
    ("{{ 'a' * 10**7 }}", 1, REPEAT),
    ("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", 1, BUILD),
    ("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", 1, BUILD),
    ("{{ ('x' * 2000000).replace('x', 'xx') }}", 1, BUILD),
    ("{{ 'x'|center(10**9) }}", 1, BUILD),
    ("{{ '%0999999999d' % 1 }}", 1, BUILD),
    ("{{ '{:>999999999}'.format(1) }}", 1, BUILD),
    ("{{ (['x' * 2000000] * 1000)|join }}", 1, BUILD),
    ("{% set l = ['x' * 2000000] %}{% set m = [] %}{% for i in range(100) %}{{ m.append(l) or '' }}{% endfor %}"
     "{{ m }}", 1, BUILD),
    ("{{ (9**999)**999 }}", 1, NUMBER),
    ("{{ 5|round(-10**9) }}", 1, "round() to more than 1000 digits is not allowed"),
    ("{{ lipsum(10**6) }}", 1, "lipsum() of more than 100 paragraphs of 1000 words is not allowed"),
    ("{{ ('x' * 2000000)|wordwrap(1) }}", 1, "wordwrap() of more than 100000 characters is not allowed"),
    # time
    (EXPONENTIAL, 1, SLOW),
]


@pytest.mark.parametrize(("source", "line", "reason"), REFUSED, ids=[s[:50] for s, _, _ in REFUSED])
def test_limit_is_refused_at_check_and_at_render_for_the_same_reason(source, line, reason):
    started = time.perf_counter()
    assert check(source) == [f"line {line}: {reason}" if line else reason]
    error = refused_at_render(source)
    assert (error.part, error.line, error.reason) == ("message.content", line, reason)
    assert str(error) == (f"message.content line {line}: {reason}" if line else f"message.content: {reason}")
    assert time.perf_counter() - started < 6  # the time limit is 1 s for each of the two renders


def test_the_wrapper_and_the_subject_are_checked_with_their_own_part():
    assert check("<html>{{ content }}{{ range(10**9) }}</html>", is_wrapper=True) == [f"line 1: {RANGE}"]
    error = refused_at_render("ok", wrapper="<html>{{ content }}{{ range(10**9) }}</html>")
    assert (error.part, error.reason) == ("template", RANGE)

    assert check("Hi {{ 'a' * 10**7 }}", subject=True) == [f"line 1: {REPEAT}"]
    error = refused_at_render("ok", subject="Hi {{ 'a' * 10**7 }}")
    assert (error.part, error.reason) == ("message.subject", REPEAT)


def test_a_line_break_the_subject_template_itself_makes_is_refused_at_check_and_at_render():
    reason = "the rendered subject contains a line break or control character"
    assert check("Hi{{ '\\n' }}there", subject=True) == [reason]
    with pytest.raises(HeaderInjection, match=reason):
        render("ok", subject="Hi{{ '\\n' }}there")
    assert check("Hi {{ contact.first_name }}\n", subject=True) == []  # a trailing newline is stripped


def test_the_limits_leave_room_for_real_templates():
    sources = [
        "{{ range(10000)|list|length }}",
        "{% for i in range(9) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
        "{% for i in range(1000) %}{{ 'x' * 2000 }}{% endfor %}",
        "{{ 'x' * 2097152 }}",
        "{{ 10**1000 // 10**999 }} {{ '%05d'|format(42) }} {{ '{:>8}'.format('hi') }} {{ 'a'|center(20) }}",
        "{{ contact.custom_fields|list|sort|join(', ') }} {{ range(5)|map('string')|join('-') }}",
        "{% for k in contact.custom_fields|sort %}{{ loop.index }}. {{ k|title }}={{ contact.custom_fields[k]|upper }}"
        "\n{% endfor %}",
        "{% for x in [[1, [2, [3]]]] recursive %}{% if x is iterable %}{{ loop(x) }}{% else %}{{ x }}{% endif %}"
        "{% endfor %}",
        "{{ [contact.first_name, campaign.name] }} {{ {'a': 1} }} {{ range(3)|list|tojson(indent=2) }}",
    ]
    for source in sources:
        assert check(source) == [], source
        render(source)


def test_a_template_that_fails_only_on_empty_sample_values_is_not_refused_at_check():
    # The sample contact has no created_at: slicing an empty value fails, but every real contact
    # has one. The check reports only what the sandbox refuses, whatever the data.
    source = "Since {{ contact.created_at[:4] }}"
    assert check(source) == []
    assert render(source).html == "Since 2018"


def test_checks_render_valid_templates_against_an_empty_sample_of_the_same_shape():
    sample = sample_context(FIXED, is_wrapper=True)
    assert set(sample) == {"contact", "campaign", "sender", "unsubscribe_url", "content"}
    assert set(sample_context(FIXED, is_wrapper=False)) == set(context())
    source = ("{% if contact.first_name %}Hi {{ contact.first_name|title }}{% else %}Hi there{% endif %}"
              "{% for key in contact.custom_fields %}{{ key }}{% endfor %}{{ sender.email|default('x') }}"
              "{{ campaign.name|upper }}{{ unsubscribe_url }}")
    assert check(source) == []
    assert check("<html><body>{{ content }}</body></html>", is_wrapper=True) == []


def test_a_render_leaves_no_budget_behind_and_threads_have_their_own():
    with pytest.raises(RenderError):
        render(NESTED_EMPTY_LOOP)
    assert _BUDGET.get() is None

    # A long CPU-bound render in one thread does not use up another thread's time.
    results = []

    def slow():
        try:
            render(EXPONENTIAL)
        except SandboxRefusal as exc:
            results.append(exc.reason)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)
    assert render("{% for i in range(9000) %}{% endfor %}ok").html == "ok"
    thread.join()
    assert results == [SLOW]
