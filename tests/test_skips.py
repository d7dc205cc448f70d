"""A reader's machine may lack a network or a browser: such tests skip with a reason, except under CI=true."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

A_SKIP = '''
import pytest

def test_needs_something_absent():
    pytest.skip("install the thing: pip install thing")

def test_runs():
    assert True
'''


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest((ROOT / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(test_a_skip=A_SKIP)
    return pytester


def test_without_ci_a_skip_stays_a_skip_with_its_reason(project, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    result = project.runpytest_inprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*install the thing: pip install thing*"])


def test_under_ci_every_skip_is_a_failure_that_keeps_its_reason(project, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = project.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*CI=true: nothing may be skipped, but this test was: install the thing*"])
