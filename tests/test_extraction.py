from mailticket.reading.extraction import detect_priority, extract_tags, merge_tags
from mailticket.settings import Priority


def test_seed_tags_lowercase_in_order() -> None:
    assert extract_tags("We need help with #billing #urgent issue") == ["billing", "urgent"]
    assert extract_tags("Production server is down #critical #server") == ["critical", "server"]


def test_tags_min_length_limit_and_dedup() -> None:
    assert extract_tags("#ab #abc #ABC #Abc") == ["abc"]
    body = " ".join(f"#tag{i:02d}" for i in range(15))
    assert len(extract_tags(body)) == 10


def test_things_that_are_not_tags() -> None:
    body = "order #12345, see http://x.example/page#section and &#8212; and C# code ##x"
    assert extract_tags(body) == []


def test_unicode_tags() -> None:
    assert extract_tags("Problem med #fakturering og #høj") == ["fakturering", "høj"]


def test_merge_tags_caps_at_ten() -> None:
    assert merge_tags([f"t{i}xx" for i in range(9)], ["new", "more", "most"])[-1] == "new"
    assert len(merge_tags([f"t{i}xx" for i in range(9)], ["new", "more"])) == 10


def test_priority_from_subject_not_body() -> None:
    # The seed's example 1: "down" in the body only -> the default.
    assert detect_priority("Help with network issue", [], Priority.normal) is Priority.normal
    assert detect_priority("URGENT: Server down!", [], Priority.normal) is Priority.critical


def test_priority_levels_and_whole_words() -> None:
    assert detect_priority("Vigtig: faktura", [], Priority.normal) is Priority.high
    assert detect_priority("Spørgsmål om licens", [], Priority.normal) is Priority.low
    assert detect_priority("Downtime tomorrow", [], Priority.normal) is Priority.normal
    assert detect_priority("Information request", [], Priority.normal) is Priority.normal
    assert detect_priority("Quick question", [], Priority.high) is Priority.low
    assert detect_priority("nothing here", [], Priority.high) is Priority.high


def test_priority_from_tags_and_highest_wins() -> None:
    assert detect_priority("Printer", ["critical"], Priority.normal) is Priority.critical
    assert detect_priority("question: server nede", [], Priority.normal) is Priority.critical
