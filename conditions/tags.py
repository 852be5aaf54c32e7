"""Global tag states, their lifecycle, and the rules for names."""

from __future__ import annotations

import enum
import re

from .exceptions import InvalidNameError, TagStateError


class GlobalTagState(str, enum.Enum):
    OPEN = "OPEN"
    TESTING = "TESTING"
    VALIDATED = "VALIDATED"
    PUBLISHED = "PUBLISHED"
    RUNNING = "RUNNING"
    INVALID = "INVALID"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: "str | GlobalTagState") -> "GlobalTagState":
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().upper())
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise TagStateError(f"unknown global tag state {value!r}; states are {names}") from None


S = GlobalTagState

#: The lifecycle: which state may follow which. Everything else is refused.
ALLOWED_TRANSITIONS: dict[GlobalTagState, frozenset[GlobalTagState]] = {
    S.OPEN: frozenset({S.TESTING, S.RUNNING}),
    S.TESTING: frozenset({S.VALIDATED, S.OPEN}),
    S.VALIDATED: frozenset({S.PUBLISHED, S.OPEN}),
    S.PUBLISHED: frozenset({S.INVALID}),
    S.RUNNING: frozenset({S.INVALID}),
    S.INVALID: frozenset(),
}

#: States a processing job may use without opting in to anything.
PROCESSING_STATES = frozenset({S.TESTING, S.VALIDATED, S.PUBLISHED, S.RUNNING})


def check_transition(tag: str, current: GlobalTagState, new: GlobalTagState) -> None:
    if new not in ALLOWED_TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in ALLOWED_TRANSITIONS[current])) or "none"
        raise TagStateError(
            f"global tag {tag!r} cannot go from {current.value} to {new.value}; "
            f"from {current.value} it may go to: {allowed}"
        )


def check_usable(tag: str, state: GlobalTagState, *, allow_open: bool = False) -> None:
    """Raise UnusableTagError unless jobs may read ``tag`` in ``state``."""
    from .exceptions import UnusableTagError

    if state in PROCESSING_STATES or (allow_open and state is S.OPEN):
        return
    if state is S.OPEN:
        raise UnusableTagError(
            f"global tag {tag!r} is OPEN (still being edited); pass allow_open=True "
            "(or --allow-open) to use it anyway"
        )
    raise UnusableTagError(f"global tag {tag!r} is {state.value} and must not be used for processing")


_TAG_NAME = re.compile(r"^[A-Za-z0-9+\-_:]+$")
# Payload names become file names (in blob stores, snapshots, caches): keep them to a
# conservative alphabet with no path separators and no leading dot.
_PAYLOAD_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-+]*$")
MAX_NAME_LENGTH = 200


def validate_tag_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH or not _TAG_NAME.match(name):
        raise InvalidNameError(
            f"invalid global tag name {name!r}: use 1 to {MAX_NAME_LENGTH} letters, digits and +-_: only"
        )
    return name


def validate_payload_name(name: object) -> str:
    if (
        not isinstance(name, str)
        or not name
        or len(name) > MAX_NAME_LENGTH
        or not _PAYLOAD_NAME.match(name)
    ):
        raise InvalidNameError(
            f"invalid payload name {name!r}: use letters, digits and _-+ only "
            "(no dots, slashes or spaces), starting with a letter, digit or _"
        )
    return name
