"""What a run tells as it works, as calls on a ``Reporter``; what it shows of them is the
caller's choice (the CLI draws them on the terminal). This one shows nothing (``-q``)."""

from __future__ import annotations


class Reporter:
    """Silent reporter; the CLI's override what they show."""

    # Streaming replies costs client CPU on every chunk: only ask for it when it is shown.
    shows_tokens = False

    def started(self, label: str, target_rounds: int) -> None: ...

    def round_done(self, label: str, rounds: int) -> None: ...

    def user_message(self, label: str, text: str) -> None: ...

    def assistant_token(self, label: str, text: str) -> None: ...

    def topic_switch(self, label: str, reason: str, topic: str) -> None: ...

    def saved(self, label: str, path: str, rounds: int) -> None: ...

    def distilling(self, label: str, chunks: int) -> None: ...

    def chunk_done(self, label: str) -> None: ...

    def distilled(self, label: str, path: str) -> None: ...

    def failed(self, label: str, reason: str) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


# Why a record was passed over when an earlier run distilled it.
ALREADY_DONE = "already distilled"


class RecordReporter(Reporter):
    """What ``distill`` tells as it works through records (silent: ``-q``)."""

    def begin(self, total: int | None) -> None:
        """How many records there are (None: not known before reading them all)."""

    def skipped(self, label: str, reason: str) -> None: ...
