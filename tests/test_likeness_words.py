"""The words a member reads about likeness: calibrated at the model's resolution, never "the
same person" for a stranger, and no verdict where one would flatter."""

from __future__ import annotations

from engine.jobs.handlers import WORDS_FROM_STEPS, likeness_sentence
from engine.jobs.lookalike import BANDS, distance_in_words


def test_bands_read_in_order_and_a_stranger_is_never_the_same_person():
    assert [w for _, w in BANDS] == ["the same person", "a strong resemblance", "a family likeness"]
    assert distance_in_words(0.30) == "the same person"
    assert distance_in_words(0.30, same_possible=False) == "a strong resemblance"
    assert distance_in_words(0.58) == "a strong resemblance", "the closest different people measured here"
    assert distance_in_words(0.65) == "a family likeness"
    assert distance_in_words(0.78) == "not much alike", "the median of different people at 64 px"


def test_no_verdict_for_a_sketch_or_a_face_not_found():
    assert "**the same person**" in likeness_sentence(0.30, WORDS_FROM_STEPS, True)
    short = likeness_sentence(0.30, 10, True)
    assert "**" not in short and "same person**" not in short and "short projection" in short
    unseen = likeness_sentence(0.30, 300, False)
    assert "**" not in unseen and "no face found" in unseen


def test_the_stranger_search_never_scores_a_face_it_cannot_find():
    import numpy as np

    from engine.face.align import align_face, face_descriptor
    from engine.jobs.lookalike import NOT_FOUND, search_score
    from tests.photos import grace_hopper

    face = align_face(grace_hopper(), 64).image
    target = face_descriptor(face)
    assert search_score(face, target) < 0.5, "a face it finds is scored"
    flat = np.full_like(face, 90)  # no face for the detector: a guessed box would still give a descriptor
    assert search_score(flat, target) == NOT_FOUND
