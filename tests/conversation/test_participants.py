"""The address rule the API documents is the one the service applies."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailticket.conversation.participants import ADDRESS_PATTERN, ParticipantError, bare_address


@settings(max_examples=300, deadline=None)
@given(st.from_regex(re.compile(ADDRESS_PATTERN[1:-1]), fullmatch=True)
       .filter(lambda a: len(a) <= 320))
def test_every_address_the_schema_allows_is_taken(address: str) -> None:
    assert bare_address(address) == address.lower()


@pytest.mark.parametrize("value", ["nobody", "a@b", "a b@c.d", "ø@x.example", "<>@x.y", ""])
def test_what_is_no_address_is_refused(value: str) -> None:
    with pytest.raises(ParticipantError):
        bare_address(value)


def test_a_display_name_form_is_read_for_the_service() -> None:
    assert bare_address("Eve <EVE@Customer.Example>") == "eve@customer.example"
