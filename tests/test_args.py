import pytest

from dmkit.dm import ArgReader, FeatureSet
from dmkit.errors import TableError


def test_shift_uint_group_done():
    r = ArgReader("t", ["dev", "12", "2", "a", "b", "tail"])
    assert r.shift("device") == "dev"
    assert r.uint("offset") == 12
    g = r.group("feature args")
    assert [g.shift("f"), g.shift("f")] == ["a", "b"]
    g.done()
    assert r.shift("x") == "tail"
    r.done()


@pytest.mark.parametrize("args,call,needle", [
    ([], lambda r: r.shift("device path"), "t: missing device path"),
    (["-1"], lambda r: r.uint("offset"), "t: invalid offset '-1'"),
    (["0x10"], lambda r: r.uint("offset"), "t: invalid offset '0x10'"),
    (["12"], lambda r: r.uint("count", 0, 10), "t: invalid count 12: must be in 0..10"),
    (["3", "a"], lambda r: r.group("feature args"), "t: invalid number of feature args 3"),
    (["a", "b"], lambda r: (r.shift("x"), r.done()), "t: too many arguments: 'b'"),
])
def test_errors(args, call, needle):
    with pytest.raises(TableError) as ei:
        call(ArgReader("t", args))
    assert needle in str(ei.value)


def test_absent_group_is_empty():
    r = ArgReader("t", [])
    assert r.group().remaining == 0


def test_feature_set_duplicate_and_conflict():
    fs = FeatureSet(ArgReader("t", []), conflicts=[frozenset({"a", "b"})])
    fs.add("a")
    with pytest.raises(TableError, match="duplicate feature 'a'"):
        fs.add("a")
    with pytest.raises(TableError, match="feature 'b' conflicts with 'a'"):
        fs.add("b")
    fs.add("c")
