"""What a run shows while it works: live text, a progress board, or nothing."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Reporter:
    """Silent reporter (``-q``); the others override what they show."""

    # Streaming replies costs client CPU on every chunk: only ask for it when it is shown.
    shows_tokens = False

    def started(self, label: str, target_rounds: int) -> None: ...

    def round_done(self, label: str, rounds: int) -> None: ...

    def user_message(self, label: str, text: str) -> None: ...

    def assistant_token(self, label: str, text: str) -> None: ...

    def topic_switch(self, label: str, reason: str, topic: str) -> None: ...

    def saved(self, label: str, path: str, rounds: int) -> None: ...

    def distilled(self, label: str, path: str) -> None: ...

    def failed(self, label: str, reason: str) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


class LineReporter(Reporter):
    """One line per finished item; used when the output is not a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def saved(self, label: str, path: str, rounds: int) -> None:
        self._line(f"saved {path} ({rounds} rounds)")

    def distilled(self, label: str, path: str) -> None:
        self._line(f"distilled {path}")

    def failed(self, label: str, reason: str) -> None:
        self._line(f"FAILED {label}: {reason}")

    def note(self, text: str) -> None:
        self._line(text)


class LiveReporter(LineReporter):
    """Streams the conversation as it is written, as the original did (one at a time)."""

    shows_tokens = True

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream or sys.stdout)
        self._speaking = False

    def _end_turn(self) -> None:
        if self._speaking:
            self.stream.write("\n")
            self._speaking = False

    def started(self, label: str, target_rounds: int) -> None:
        self._line(f"\n=== {label}: {target_rounds} rounds ===")

    def user_message(self, label: str, text: str) -> None:
        self._end_turn()
        self._line(f"\n[user] {text}")

    def assistant_token(self, label: str, text: str) -> None:
        if not self._speaking:
            self.stream.write("\n[assistant] ")
            self._speaking = True
        self.stream.write(text)
        self.stream.flush()

    def round_done(self, label: str, rounds: int) -> None:
        self._end_turn()

    def topic_switch(self, label: str, reason: str, topic: str) -> None:
        self._end_turn()
        self._line(f"\n--- topic switch ({reason}): {topic}")

    def saved(self, label: str, path: str, rounds: int) -> None:
        self._end_turn()
        super().saved(label, path, rounds)


class BoardReporter(LineReporter):
    """A status line of rounds done per conversation, redrawn in place on a terminal."""

    def __init__(
        self, stream: TextIO | None = None, max_shown: int = 6, min_interval: float = 0.2
    ) -> None:
        super().__init__(stream)
        self.max_shown = max_shown
        self.min_interval = min_interval
        self.progress: dict[str, tuple[int, int]] = {}
        self.done = 0
        self._last_draw = 0.0

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        shown = [f"{label} {r}/{t}" for label, (r, t) in list(self.progress.items())]
        extra = len(shown) - self.max_shown
        text = " | ".join(shown[: self.max_shown]) + (f" | +{extra} more" if extra > 0 else "")
        self.stream.write(f"\r\x1b[2K[{self.done} done] {text}")
        self.stream.flush()

    def _line(self, text: str) -> None:
        self.stream.write("\r\x1b[2K")
        super()._line(text)
        self._draw(force=True)

    def started(self, label: str, target_rounds: int) -> None:
        self.progress[label] = (0, target_rounds)
        self._draw(force=True)

    def round_done(self, label: str, rounds: int) -> None:
        target = self.progress.get(label, (0, 0))[1]
        self.progress[label] = (rounds, target)
        self._draw()

    def saved(self, label: str, path: str, rounds: int) -> None:
        self.progress.pop(label, None)
        self.done += 1
        super().saved(label, path, rounds)

    def failed(self, label: str, reason: str) -> None:
        self.progress.pop(label, None)
        super().failed(label, reason)

    def close(self) -> None:
        self.stream.write("\r\x1b[2K")
        self.stream.flush()


def choose_reporter(*, quiet: bool, concurrent_items: int, tty: bool) -> Reporter:
    """Live text for one conversation at a time on a terminal, else a board or lines."""
    if quiet:
        return Reporter()
    if tty and concurrent_items == 1:
        return LiveReporter()
    return BoardReporter() if tty else LineReporter()
