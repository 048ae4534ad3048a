"""Every request kind is whole: a handler, the slash command that sends it (or why none does),
a CLI verb (or why none), a wire round-trip sample and a test of its handler. A new kind fails
here until each piece exists, or its absence is explained in the tables below."""

from __future__ import annotations

import ast
from pathlib import Path

import discord
import pytest
from discord import app_commands

from engine.protocol import REQUESTS

REPO = Path(__file__).resolve().parents[1]

# kind -> the slash command that sends it, or the reason none does
SLASH = {
    "project": "project", "render": "me", "blend": "blend", "average": "average", "mix": "mix", "swap": "swap",
    "edit": "edit", "morph": "morph", "loop": "loop", "random": "random", "grid": "grid", "team": "team",
    "lookalike": "lookalike", "stranger": "lookalike",
    "faces": "none: /project asks the engine for a group photo's faces itself (ProjectRequest.ask_if_several)",
}
# kind -> the `wspace` verb that sends it, or the reason none does
CLI = {
    "project": "project", "render": "render", "blend": "blend", "mix": "mix", "swap": "swap", "edit": "edit",
    "morph": "morph", "loop": "loop", "random": "generate", "grid": "grid", "team": "team", "faces": "faces",
    "stranger": "lookalike",
    "average": "none: a community's mean face needs its members; on files, `morph` walks through several faces",
    "lookalike": "none: it compares one member with the others who share; the CLI has no members",
}
DRAWN_TOGETHER = ("test_batching.py::"
                  "test_renders_edits_and_blends_of_several_jobs_are_drawn_together_as_they_would_be_alone")
# kind -> a test of its handler (file::function)
HANDLER_TESTS = {
    "project": "test_batching.py::test_concurrent_projections_are_batched_and_each_member_gets_their_solo_fit",
    "render": "test_bot_e2e.py::test_me_renders_the_stored_face",
    "blend": "test_between.py::test_a_blend_is_a_kept_face_that_redraws_what_was_shown",
    "average": "test_between.py::test_a_blend_is_a_kept_face_that_redraws_what_was_shown",
    "mix": DRAWN_TOGETHER,
    "swap": DRAWN_TOGETHER,
    "edit": DRAWN_TOGETHER,
    "morph": "test_between.py::test_a_morph_walks_through_the_people_between",
    "loop": "test_bot_e2e.py::test_average_mix_grid_loop_and_age_answer_with_pictures",
    "random": DRAWN_TOGETHER,
    "grid": DRAWN_TOGETHER,
    "team": "test_batching.py::test_a_team_photo_projects_its_faces_as_one_batch_beside_another_job",
    "faces": "test_team.py::test_the_engine_numbers_faces_and_projects_the_one_asked",
    "lookalike": "test_team.py::test_a_lookalike_among_many_members_answers_with_the_nearest_few",
    "stranger": "test_team.py::test_lookalike_names_the_nearest_member_and_finds_a_stranger",
}


def slash_commands() -> set[str]:
    from bot.commands import admin, blend, edit, menus, morph, privacy, project, team

    tree = app_commands.CommandTree(discord.Client(intents=discord.Intents.none()))
    for module in (project, edit, blend, morph, team, privacy, admin, menus):
        module.register(tree, None)
    return {c.name for c in tree.get_commands()}


def cli_verbs() -> set[str]:
    import typer

    from engine.cli.commands import app

    return set(typer.main.get_command(app).commands)


def has_test(node_id: str) -> bool:
    path, name = node_id.split("::")
    tree = ast.parse((REPO / "tests" / path).read_text())
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in ast.walk(tree))


@pytest.mark.parametrize("kind", sorted(REQUESTS))
def test_every_kind_has_every_piece(kind):
    from engine.jobs.dispatch import HANDLERS
    from tests.test_protocol import every_message

    request = REQUESTS[kind]
    assert request in HANDLERS, f"{kind}: no handler in engine/jobs"
    assert any(type(m) is request for m in every_message()), f"{kind}: no wire sample in tests/test_protocol.py"
    assert kind in SLASH and kind in CLI and kind in HANDLER_TESTS, f"{kind}: add it to this file's tables"
    for table, names, what in ((SLASH, slash_commands(), "slash command"), (CLI, cli_verbs(), "CLI verb")):
        piece = table[kind]
        if piece.startswith("none: "):
            assert len(piece) > 20, f"{kind}: say why it has no {what}"
        else:
            assert piece in names, f"{kind}: its {what} {piece!r} does not exist"
    assert has_test(HANDLER_TESTS[kind]), f"{kind}: its handler test {HANDLER_TESTS[kind]} does not exist"


def test_the_tables_name_only_real_kinds():
    assert set(SLASH) == set(CLI) == set(HANDLER_TESTS) == set(REQUESTS)
