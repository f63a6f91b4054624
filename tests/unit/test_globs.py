"""The trigger filters' glob language: AWS's documented examples, and properties against an
independent, deliberately naive matcher."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.globs import GlobError, compile_glob, escape, matches

# --- AWS's documented examples ("Working with glob patterns in syntax") -------------------

DOCUMENTED = [
    ("*.java", "Main.java", True),
    ("*.java", "src/Main.java", False),
    ("*.*", "a.b", True),
    ("*.*", "ab", False),
    ("*.{java,class}", "A.class", True),
    ("*.{java,class}", "A.jar", False),
    ("foo.?", "foo.c", True),
    ("foo.?", "foo.cc", False),
    ("my-file.jar", "my-file.jar", True),
    ("my-file.jar", "dir/my-file.jar", False),
    ("directory/my-file.jar", "directory/my-file.jar", True),
    ("**", "any/depth/at/all.txt", True),
    ("directory/**", "directory/a/b/c", True),
    ("directory/**", "other/a", False),
    ("directory/*", "directory/a", True),
    ("directory/*", "directory/a/b", False),
    ("[abc]x", "bx", True),
    ("[a-c]x", "dx", False),
    ("[!a-c]x", "dx", True),
    ("[!a-c]x", "/x", False),
    ("[*?\\\\]", "?", True),
    ("[-a]", "-", True),
    ("\\*", "*", True),
    ("\\*", "a", False),
    ("release-*", "release-1.2", True),
    ("feature/*", "feature/login", True),
    ("feature/*", "feature/login/v2", False),
    ("feature/**", "feature/login/v2", True),
    ("**/README.md", "README.md", True),
    ("**/README.md", "docs/README.md", True),
    ("**/*.js", "a/b/c.js", True),
    ("common/**/*.js", "common/util.js", True),
    ("common/**/*.js", "common/lib/util.js", True),
    ("common/**/*.js", "commonutil.js", False),
]


@pytest.mark.parametrize(("pattern", "name", "expected"), DOCUMENTED)
def test_documented_examples(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("abc\\", "ends with an escape"),
        ("[abc", "never closed"),
        ("{a,b", "never closed"),
        ("{a,{b,c}}", "cannot be nested"),
        ("[a/b]", "'/' cannot appear"),
        ("[z-a]", "backwards"),
    ],
)
def test_bad_patterns_say_what_is_wrong(pattern: str, fragment: str) -> None:
    with pytest.raises(GlobError) as exc:
        compile_glob(pattern)
    assert fragment in str(exc.value)
    assert pattern in str(exc.value)


# --- Properties ---------------------------------------------------------------------------

ALPHABET = "ab/."
names = st.text(alphabet=ALPHABET, max_size=8)
tokens = st.lists(st.sampled_from(["a", "b", "/", ".", "*", "**", "?"]), max_size=6)


def reference(tokens: tuple[str, ...], name: str) -> bool:
    """A naive backtracking matcher over pre-split tokens, sharing no code with the
    compiler: the semantics written out a second time."""

    @cache
    def go(t: int, n: int) -> bool:
        if t == len(tokens):
            return n == len(name)
        tok = tokens[t]
        if tok == "**":
            if t + 1 < len(tokens) and tokens[t + 1] == "/" and go(t + 2, n):
                return True  # "**/" also stands for no directory at all
            return any(go(t + 1, k) for k in range(n, len(name) + 1))
        if tok == "*":
            k = n
            while True:
                if go(t + 1, k):
                    return True
                if k == len(name) or name[k] == "/":
                    return False
                k += 1
        if tok == "?":
            return n < len(name) and name[n] != "/" and go(t + 1, n + 1)
        return name.startswith(tok, n) and go(t + 1, n + len(tok))

    return go(0, 0)


@given(tokens, names)
def test_compiled_globs_agree_with_a_naive_matcher(toks: list[str], name: str) -> None:
    # Adjacent "*" tokens would read as "**" once joined; keep the tokenization unambiguous.
    joined: list[str] = []
    for tok in toks:
        if tok.startswith("*") and joined and joined[-1].startswith("*"):
            continue
        joined.append(tok)
    assert matches("".join(joined), name) is reference(tuple(joined), name)


@given(st.text(max_size=30))
def test_an_escaped_name_matches_itself(name: str) -> None:
    assert matches(escape(name), name)


@given(st.text(max_size=12), st.text(max_size=12))
def test_an_escaped_name_matches_only_itself(name: str, other: str) -> None:
    assert matches(escape(name), other) is (name == other)


@given(names)
def test_double_star_matches_everything(name: str) -> None:
    assert matches("**", name)


@given(names)
def test_single_star_matches_exactly_the_names_without_a_separator(name: str) -> None:
    assert matches("*", name) is ("/" not in name)


@given(names, names)
def test_a_directory_double_star_matches_everything_below_it(d: str, rest: str) -> None:
    directory = escape(d)
    assert matches(f"{directory}/**", f"{d}/{rest}")
