"""What a member typed, echoed back: plain words on one bounded line, whatever they typed."""

from __future__ import annotations

import pytest

from bot.commands.common import ECHO_MAX, plain


@pytest.mark.parametrize(
    "typed, never",
    [
        ("[free nitro](https://evil.example/x)", "[free nitro]("),
        ("</wspace stats:123>", "</wspace"),
        ("<t:1:R> <#123> <:e:1>", "<t:"),
        ("||spoiler||", "||"),
        ("a\n# HEADER", "\n"),
        ("-# small", "-#"),
        ("1. one\n2) two", "1. "),
        ("> quote", "> "),
        ("`code`", "`c"),
        ("@everyone", "@everyone"),
        ("**bold** __under__ ~~strike~~", "**"),
    ],
)
def test_no_markdown_survives(typed, never):
    shown = plain(typed)
    assert never not in shown.replace("\\" + never, ""), shown


def test_a_long_text_is_cut_to_one_bounded_line():
    shown = plain("word " * 5000)
    assert "\n" not in shown and shown.endswith("…")
    assert len(shown) <= ECHO_MAX + 10  # escapes may add a few backslashes
    assert plain("age_young") == "age\\_young", "an underscore stays an underscore on screen"


def test_the_models_unlabelled_directions_are_named_for_members():
    from bot.commands.edit import shown

    assert shown("sefa0") == "surprise 1" and shown("sefa2") == "surprise 3"
    assert shown("age") == "age" and shown("sefa") == "sefa" and shown("sefa0x") == "sefa0x"
