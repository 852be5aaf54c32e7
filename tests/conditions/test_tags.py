"""Global tag lifecycle and names (the rules every store applies)."""

import itertools

import pytest

from conditions.exceptions import InvalidNameError, TagStateError, UnusableTagError
from conditions.tags import (
    GlobalTagState as S,
    check_transition,
    check_usable,
    validate_payload_name,
    validate_tag_name,
)

# DESIGN.md, written out independently of conditions.tags.ALLOWED_TRANSITIONS.
ALLOWED = {
    (S.OPEN, S.TESTING), (S.OPEN, S.RUNNING),
    (S.TESTING, S.VALIDATED), (S.TESTING, S.OPEN),
    (S.VALIDATED, S.PUBLISHED), (S.VALIDATED, S.OPEN),
    (S.PUBLISHED, S.INVALID),
    (S.RUNNING, S.INVALID),
}


@pytest.mark.parametrize("current,new", list(itertools.product(S, S)), ids=lambda s: s.value)
def test_transition_table(current, new):
    if (current, new) in ALLOWED:
        check_transition("gt", current, new)
    else:
        with pytest.raises(TagStateError, match=f"{current.value} to {new.value}"):
            check_transition("gt", current, new)


def test_state_parsing():
    assert S.parse("published") is S.PUBLISHED
    assert S.parse(S.OPEN) is S.OPEN
    with pytest.raises(TagStateError, match="unknown global tag state"):
        S.parse("FROZEN")


def test_usable_states():
    for state in (S.TESTING, S.VALIDATED, S.PUBLISHED, S.RUNNING):
        check_usable("gt", state)
    with pytest.raises(UnusableTagError, match="OPEN"):
        check_usable("gt", S.OPEN)
    check_usable("gt", S.OPEN, allow_open=True)
    with pytest.raises(UnusableTagError, match="INVALID"):
        check_usable("gt", S.INVALID, allow_open=True)


@pytest.mark.parametrize("name", ["main", "data_reprocessing_proc13", "A+B-C:1", "x" * 200])
def test_good_tag_names(name):
    assert validate_tag_name(name) == name


@pytest.mark.parametrize("name", ["", "with space", "a/b", "../x", "x" * 201, "tag;drop", "ü", None, 3])
def test_bad_tag_names(name):
    with pytest.raises(InvalidNameError):
        validate_tag_name(name)


@pytest.mark.parametrize("name", ["BeamSpot", "PXDBackgroundGenerator_gan", "_x", "a-b+c"])
def test_good_payload_names(name):
    assert validate_payload_name(name) == name


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/b", ".hidden", "a.b", "", "-x", "a b", "x" * 201, None])
def test_bad_payload_names(name):
    with pytest.raises(InvalidNameError):
        validate_payload_name(name)
