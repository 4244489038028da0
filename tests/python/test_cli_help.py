"""`--help` of every nanowhale command: each option's default shown once."""

import argparse
import re

from nanowhale.cli import build_parser


def parsers(parser, name="nanowhale"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from parsers(sub, f"{name} {sub_name}")


def test_every_default_is_shown_once():
    seen = 0
    for name, p in parsers(build_parser()):
        text = " ".join(p.format_help().split())  # argparse wraps lines: compare on one line
        twice = re.findall(r"\(default[^)]*\)(?:(?!--)[^()]){0,40}\(default[^)]*\)", text)  # within one option
        assert not twice, f"`{name} --help` shows a default twice: {twice}"
        seen += 1
    assert seen > 20
    research_init = dict(parsers(build_parser()))["nanowhale research init"]
    text = " ".join(research_init.format_help().split())
    assert "a rung of the ladder (default tiny)" in text and "(default: 0.005)" in text  # once: the help's or argparse's
