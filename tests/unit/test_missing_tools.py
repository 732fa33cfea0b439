"""A missing tool skips a test on a developer's machine and fails it in CI (tests/harness/tools.py)."""

from __future__ import annotations

import pytest

from tests.harness.tools import in_ci, missing


@pytest.mark.parametrize("value", ["true", "1", "yes", "TRUE"])
def test_a_missing_tool_fails_the_test_when_ci_is_set(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="PgBouncer is not installed"):
        missing("PgBouncer is not installed")


@pytest.mark.parametrize("value", [None, "", "0", "false", "no"])
def test_a_missing_tool_skips_the_test_with_its_reason_outside_ci(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert not in_ci()
    with pytest.raises(pytest.skip.Exception, match="PgBouncer is not installed"):
        missing("PgBouncer is not installed")


def test_no_test_skips_by_itself_for_a_missing_tool():
    """Every skip goes through ``missing``, so that none can hide a missing tool in CI."""
    import ast
    from pathlib import Path

    tests = Path(__file__).resolve().parents[1]
    helper = tests / "harness" / "tools.py"
    found = []
    for path in sorted(tests.rglob("*.py")):
        if path == helper or path == Path(__file__).resolve():
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in ("skip", "skipif", "importorskip", "xfail"):
                found.append(f"{path.relative_to(tests.parent)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "skips that bypass tests.harness.tools.missing:\n" + "\n".join(found)
