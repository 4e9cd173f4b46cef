import pytest

from dmkit.dm import format_table, join_args, parse_table, split_args
from dmkit.errors import TableError


def test_parse_with_comments_and_blank_lines():
    text = "# a comment\n\n0 100 linear /dev/sda 0\n  \n100 50 zero\n"
    lines = parse_table(text)
    assert [(l.start_sector, l.nr_sectors, l.target_type, l.args, l.lineno) for l in lines] == [
        (0, 100, "linear", ("/dev/sda", "0"), 3),
        (100, 50, "zero", (), 5),
    ]
    assert format_table(lines) == "0 100 linear /dev/sda 0\n100 50 zero\n"


@pytest.mark.parametrize("text,needle", [
    ("", "table is empty"),
    ("# only a comment\n", "table is empty"),
    ("0 100\n", "t:1: expected"),
    ("x 100 zero\n", "t:1: invalid start sector 'x'"),
    ("0 -5 zero\n", "t:1: invalid length '-5'"),
    ("0 0 zero\n", "t:1: zero-length target"),
    ("8 100 zero\n", "t:1: segment starts at sector 8, expected 0 (gap"),
    ("0 100 zero\n\n120 8 zero\n", "t:3: segment starts at sector 120, expected 100 (gap"),
    ("0 100 zero\n50 8 zero\n", "t:2: segment starts at sector 50, expected 100 (overlap"),
])
def test_parse_errors_name_the_line(text, needle):
    with pytest.raises(TableError) as ei:
        parse_table(text, source="t")
    assert needle in str(ei.value)
    assert "\n" not in str(ei.value)


def test_split_args_backslash_escapes():
    assert split_args(r"a\ b  c\\d  e") == ["a b", "c\\d", "e"]
    assert split_args("  ") == []
    with pytest.raises(TableError):
        split_args("abc\\")


def test_join_args_round_trips():
    args = ["a b", "c\\d", "plain", "tab\there"]
    assert split_args(join_args(args)) == args
