"""The serial trigger parser, property-based: what a PLC, a noisy line or an attacker sends.

Whatever the bytes, the parser never fails and never grows without bound; a trigger is a
whole line equal to the token and nothing else; how the bytes are cut into reads does not
change what fires.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station.reject.serial_link import SerialLinkError, TriggerLineParser

TOKEN = b"TRIG"
ENDINGS = st.sampled_from([b"\n", b"\r\n", b"\r"])
# line contents: anything without CR/LF, biased towards near-misses of the token
NEAR = st.sampled_from([b"TRIG", b"RETRIG", b"NOTRIG", b"TRIGGER", b" TRIG", b"TRIG ", b"TRI",
                        b"RIG", b"", b"trig", b"TRIG\x00", b"\xffTRIG"])
LINE = st.one_of(NEAR, st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(
    b"\n", b"")))


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given positions (sorted, deduplicated, within range)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


def expected(stream: bytes) -> int:
    """The reference: split on CR LF / CR / LF, count the complete lines equal to the token."""
    return sum(line == TOKEN for line in re.split(rb"\r\n|\r|\n", stream)[:-1])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=12))
def test_arbitrary_bytes_never_crash_and_count_only_whole_lines(data: bytes, cuts: list[int]):
    parser = TriggerLineParser(b"TRIG\n")
    counts = [parser.feed(chunk) for chunk in chunked(data, cuts)]
    assert all(isinstance(c, int) and c >= 0 for c in counts)
    assert len(parser._line) <= len(TOKEN)  # bounded, whatever came
    # a CR LF cut between two reads ends the line at the CR; the LF then ends an empty line,
    # which never matches: the count is the whole stream's
    assert sum(counts) == expected(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(LINE, ENDINGS), max_size=25), st.lists(st.integers(0, 500),
                                                                  max_size=15))
def test_only_exact_framed_tokens_fire_however_the_bytes_are_cut(lines, cuts):
    stream = b"".join(text + end for text, end in lines)
    whole = TriggerLineParser("TRIG\n").feed(stream)
    assert whole == sum(text == TOKEN for text, _ in lines)
    parser = TriggerLineParser("TRIG\r\n")  # the same token, however the recipe ends it
    assert sum(parser.feed(chunk) for chunk in chunked(stream, cuts)) == whole


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(LINE, ENDINGS), min_size=1, max_size=10))
def test_byte_by_byte_equals_one_read(lines):
    stream = b"".join(text + end for text, end in lines)
    one_by_one = TriggerLineParser(b"TRIG")
    assert sum(one_by_one.feed(stream[i:i + 1]) for i in range(len(stream))) == \
        TriggerLineParser(b"TRIG").feed(stream)


def test_a_partial_line_waits_for_its_end_and_reset_forgets_it():
    parser = TriggerLineParser(b"TRIG\n")
    assert parser.feed(b"TR") == 0 and parser.feed(b"IG") == 0
    assert parser.feed(b"\n") == 1
    parser.feed(b"TRIG")
    parser.reset()  # the port was reopened: what came before is not this line's start
    assert parser.feed(b"\n") == 0
    assert parser.feed(b"x" * 10_000 + b"TRIG\n") == 0  # a long line is skipped, not kept
    assert len(parser._line) == 0 and parser.feed(b"TRIG\n") == 1


@pytest.mark.parametrize("message", [b"", b"\n", b"\r\n", b"TR\nIG"])
def test_a_message_that_is_not_one_line_is_refused(message):
    with pytest.raises(SerialLinkError, match="one line"):
        TriggerLineParser(message)
