"""Typed errors a member can cause (part of the protocol: the bot reads their codes). Each
carries one human sentence for Discord and the CLI.

Anything that is not a :class:`UserError` is a bug: logged with its traceback, and
the member gets an apology with the job id.
"""

from __future__ import annotations


class UserError(Exception):
    """Base class; ``str(err)`` is the sentence shown to the member."""

    code = "user_error"

    def __init__(self, message: str, **details) -> None:
        super().__init__(message)
        self.details = details


class NotAnImage(UserError):
    code = "not_an_image"


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


ENGINE_CANNOT_START = 78  # exit status of an engine process that cannot load its model (sysexits' EX_CONFIG)
