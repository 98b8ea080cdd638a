"""Fixtures of the AI tests: a real OpenAI-compatible HTTP server on 127.0.0.1 and settings pointing at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from netspy_tui.ai import AISettings
from tests.fake_openai import FakeOpenAI

#: A fake key; tests assert it never shows up in errors or logs.
TEST_KEY = "sk-test-netspy-0123456789abcdef"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def settings(fake: FakeOpenAI) -> AISettings:
    # No SDK retries: each scripted reply answers exactly one request. Short timeout: stall tests stay fast.
    return AISettings(
        api_key=SecretStr(TEST_KEY), base_url=fake.base_url, model="gpt-5-mini", timeout=5.0, max_retries=0
    )
