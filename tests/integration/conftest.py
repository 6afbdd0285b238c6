"""One Agent Server (``langgraph dev`` with the fake model server behind it) for every test
that needs one: it takes tens of seconds to start."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.agent_server import DevServer, ServerStartError, dev_server_running
from tests.support.fake_openai import FakeOpenAIServer


@pytest.fixture(scope="session")
def agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with FakeOpenAIServer() as fake:
        try:
            with dev_server_running(tmp_path_factory.mktemp("agent-server"), fake) as server:
                yield server
        except ServerStartError as error:
            pytest.fail(str(error))
