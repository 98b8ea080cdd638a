import pytest
from hypothesis import given
from hypothesis import strategies as st

from netspy_tui.textsafe import clean, first_line, redact_url, valid_utf8

pytestmark = pytest.mark.quiet


def test_escapes_and_controls_become_visible():
    assert clean("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert clean("evil\u202ename") == "evil\\u202ename"
    assert clean("tab\there") == "tab\\x09here"


def test_markup_is_left_as_literal_text():
    # clean() does not interpret markup; the TUI wraps the result in Text so it never is.
    assert clean("[bold red]x[/]") == "[bold red]x[/]"


def test_long_values_end_with_ellipsis():
    out = clean("x" * 10_000, 50)
    assert len(out) == 50 and out.endswith("…")


def test_invalid_utf8_bytes_are_escaped():
    assert clean(b"ok\xff") == "ok\\xff"


def test_first_line_of_error_bodies():
    assert first_line(b"\n  System not initialized\nmore") == "System not initialized"


@given(st.text())
def test_clean_output_has_no_control_characters(text):
    out = clean(text, None)
    assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in out)
    assert "\u202e" not in out and "\u2066" not in out


def test_valid_utf8_replaces_or_escapes_undecodable_bytes_everywhere_in_a_value():
    bad = b"ab\xffcd".decode("utf-8", "surrogateescape")
    value = {bad: [bad, 1, None], "n": 2}
    assert valid_utf8(value, "replace") == {"ab\ufffdcd": ["ab\ufffdcd", 1, None], "n": 2}  # as the Go server does
    assert valid_utf8(value, "backslashreplace") == {"ab\\xffcd": ["ab\\xffcd", 1, None], "n": 2}  # the store's
    assert valid_utf8("x\ud800y", "replace") == "x?y"  # a lone surrogate that is no byte
    assert valid_utf8("x\ud800y", "backslashreplace") == "x\\ud800y"


def test_redact_url_masks_only_the_password():
    assert redact_url("http://admin:hunter2@127.0.0.1:8080/x") == "http://admin:****@127.0.0.1:8080/x"
    assert redact_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert redact_url("http://[::1") == "http://[::1"  # unparsable: as it is


def test_every_code_point_is_escaped_exactly_when_its_category_is_a_hidden_one() -> None:
    """The fast path (values Python calls printable are returned as they are) gives, for every
    character of the Basic Multilingual Plane and the supplementary planes' first block, what the
    character-by-character rule gives: escaped when Cc/Cf/Cs/Co/Cn/Zl/Zp, kept otherwise; newlines
    and tabs kept only when asked."""
    import unicodedata  # noqa: PLC0415

    hidden = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
    for code in [*range(0x10000), *range(0x10000, 0x10400), 0xE0001, 0xE007F, 0xF0000, 0x10FFFF]:
        ch = chr(code)
        for keep in (False, True):
            got = clean(f"a{ch}b\n", None, keep_newlines=keep)
            kept = ch == " " or unicodedata.category(ch) not in hidden or (keep and ch in "\n\t")
            middle = ch if kept else (f"\\x{code:02x}" if code < 0x100 else
                                      f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")  # fmt: skip
            assert got == f"a{middle}b" + ("\n" if keep else "\\x0a"), hex(code)
