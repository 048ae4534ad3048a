"""Typed errors a member can cause (part of the protocol: the bot reads their codes). Each
carries one human sentence for Discord and the CLI.

Anything that is not a :class:`UserError` is a bug: logged with its traceback, and
the member gets an apology with the job id.
"""

from __future__ import annotations


class UserError(Exception):
    """Base class; ``str(err)`` is the sentence shown to the member. ``refunded``: the job costs
    the member nothing (the input was refused before any work, or the engine lost it), so a
    member whose photo was refused can try a good one at once."""

    code = "user_error"
    refunded = True

    def __init__(self, message: str, **details) -> None:
        super().__init__(message)
        self.details = details


class NotAnImage(UserError):
    code = "not_an_image"


class CraftedUpload(NotAnImage):
    """A file built to cost the engine, not a photo (a JPEG with thousands of scans or segments):
    refused before decoding and, unlike an honest mistake, not refunded, so repeating it is not free."""

    code = "crafted_upload"
    refunded = False


class ImageTooLarge(UserError):
    code = "image_too_large"


class NoFaceFound(UserError):
    code = "no_face"


class BadArgument(UserError):
    code = "bad_argument"


class UnknownDirection(UserError):
    code = "unknown_direction"


class ModelMismatch(UserError):
    code = "model_mismatch"


class Stopped(UserError):
    """The member (or a moderator) stopped the job (engine/serving/stops.py)."""

    code = "cancelled"
    refunded = False  # the member chose to stop work the engine had already done


class EngineRestarted(UserError):
    """The engine died with the job in hand, or the job ran past its time (said by the bot's
    transports, never raised by the engine)."""

    code = "engine_restarted"


CODES = {cls.code: cls for cls in (UserError, NotAnImage, CraftedUpload, ImageTooLarge, NoFaceFound, BadArgument,
                                   UnknownDirection, ModelMismatch, Stopped, EngineRestarted)}


def refunded(code: str) -> bool:
    """Whether a failure with ``code`` costs the member nothing (not "internal": a bug is charged)."""
    cls = CODES.get(code)
    return cls is not None and cls.refunded


ENGINE_CANNOT_START = 78  # exit status of an engine process that cannot load its model (sysexits' EX_CONFIG)
