from pgcarry.schemas.lsn import ZERO, Lsn


def test_parse_and_text_round_trip():
    lsn = Lsn.parse("16/B374D848")
    assert lsn.value == (0x16 << 32) | 0xB374D848
    assert str(lsn) == "16/B374D848"
    assert str(Lsn.parse("0/0")) == "0/0"
    assert Lsn.parse("a/b") == Lsn(0xA00000000 + 0xB)


def test_fixed_width_key_sorts_like_lsn():
    lsns = [Lsn.parse(t) for t in ("1/0", "0/FFFFFFFF", "A/1", "0/10", "0/9")]
    assert sorted(lsns, key=Lsn.key) == sorted(lsns)
    assert Lsn.parse("0/9").key() == "00000000/00000009"


def test_order_and_arithmetic():
    a, b = Lsn.parse("0/100"), Lsn.parse("1/0")
    assert a < b and max(a, b) == b and ZERO < a
    assert b - a == (1 << 32) - 0x100
    assert a + 0x10 == Lsn.parse("0/110")


def test_bad_text_is_rejected():
    for bad in ("", "0", "0/", "G/1", "1/2/3", "123456789/0"):
        try:
            Lsn.parse(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
