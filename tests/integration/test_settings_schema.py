"""One declaration per setting: the CLI, the validation, the run report and the resume check
all come from it; and every setting is checked before the first model call."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from graph_distill.cli.main import main, run_command
from graph_distill.context import PipelineContext, setting
from graph_distill.run.settings import GenerationSettings
from tests.integration.test_cli import SECRET, invoke, run_args
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.files import json_files
from tests.support.roles import RoleResponder, role_of


@dataclass(kw_only=True)
class WiderContext(PipelineContext):
    """The pipeline's settings and one more, declared once."""

    warmth: float = setting(
        0.5,
        "How warm the assistant sounds.",
        flag="--warmth",
        minimum=0.0,
        maximum=1.0,
        resume=True,
    )


def invoke_wider(*args: str) -> Result:
    command = run_command(WiderContext, GenerationSettings)
    return CliRunner().invoke(command, list(args[1:]), catch_exceptions=False)


def test_a_new_field_reaches_help_validation_report_and_resume(tmp_path: Path) -> None:
    help_text = invoke_wider("run", "--help").output
    assert "--warmth" in help_text and "How warm the assistant sounds." in help_text

    bad = invoke_wider("run", "--warmth", "3", "-c", str(tmp_path / "c"))
    assert bad.exit_code == 2 and "--warmth" in bad.output

    budget = ("-j", "1", "--budget-tokens", "1", "--no-distill")
    with FakeOpenAIServer(RoleResponder()) as server:
        # Over budget after the first conversation: the run ends unfinished, to be resumed.
        first = invoke_wider(*run_args(server, tmp_path, "-n", "2", "--warmth", "0.25", *budget))
        assert first.exit_code == 0, first.output
        report = json.loads((tmp_path / "conv" / "run_report.json").read_text())
        assert report["settings"]["warmth"] == 0.25
        other = invoke_wider(
            *run_args(server, tmp_path, "-n", "2", "--warmth", "0.75", *budget, "--resume")
        )
    assert other.exit_code == 2
    assert "--warmth: was 0.25, now 0.75" in other.output


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (("--max-tokens", "100", "--overlap-tokens", "200"), "--overlap-tokens"),
        (
            ("--split-method", "turns", "--max-turns", "3", "--overlap-turns", "3"),
            "--overlap-turns",
        ),
        (("--min-rounds", "9", "--max-rounds", "3"), "--min-rounds"),
        (("--typo-rate", "1.5"), "--typo-rate"),
        (("--max-tokens", "4"), "--max-tokens"),
        (("-j", "0"), "--concurrency"),
    ],
)
def test_a_setting_that_cannot_work_stops_the_run_before_any_call(
    tmp_path: Path, options: tuple[str, ...], named: str
) -> None:
    with FakeOpenAIServer(RoleResponder()) as server:
        result = invoke(*run_args(server, tmp_path, "-n", "100", *options))
        assert server.requests == []
    assert result.exit_code == 2
    assert named in result.output and "Traceback" not in result.output
    assert not (tmp_path / "conv").exists() or not list((tmp_path / "conv").glob("*.json"))


@pytest.mark.parametrize("max_turns", ["1", "2"])
def test_tiny_turn_chunks_work(tmp_path: Path, max_turns: str) -> None:
    with FakeOpenAIServer(RoleResponder()) as server:
        result = invoke(
            *run_args(server, tmp_path, "-n", "1", "--split-method", "turns"),
            "--max-turns",
            max_turns,
            "--min-rounds",
            "5",
            "--max-rounds",
            "5",
        )
    assert result.exit_code == 0, result.output
    [distilled] = (tmp_path / "dist").glob("*.json")
    data = json.loads(distilled.read_text())
    # 10 messages, no overlap when a chunk holds 1 or 2 messages
    assert data["total_chunks"] == 10 // int(max_turns)
    assert data["metadata"]["overlap_turns"] == 0


def test_default_overlap_is_capped_to_fit_the_chunk() -> None:
    assert PipelineContext(max_turns=2).turn_overlap() == 0
    assert PipelineContext(max_turns=5).turn_overlap() == 2
    assert PipelineContext(max_tokens=100).token_overlap() == 49
    assert PipelineContext(max_tokens=4000).token_overlap() == 200
    assert PipelineContext(max_tokens=100, overlap_tokens=10).token_overlap() == 10


def test_help_shows_each_default_once_from_the_declaration() -> None:
    text = CliRunner().invoke(main, ["run", "--help"], terminal_width=200).output
    assert "[default: 30]" in text and "[default: 4000]" in text and "[default: 0.12]" in text
    assert "[env MIMO_API_KEY]" in text and SECRET not in text


def test_a_distillation_without_usable_notes_is_written_counted_and_redone(
    tmp_path: Path,
) -> None:
    no_json = RoleResponder(distill=lambda n: "I would rather chat than write JSON.")
    with FakeOpenAIServer(no_json) as server:
        first = invoke(*run_args(server, tmp_path, "-n", "1"))
    assert first.exit_code == 1
    assert "no chunk got usable notes" in first.output and "kept raw" in first.output
    [distilled] = (tmp_path / "dist").glob("*.json")
    data = json.loads(distilled.read_text())
    assert data["final_summary"] == "I would rather chat than write JSON."
    assert {c["status"] for c in data["distilled_chunks"]} == {"raw"}

    with FakeOpenAIServer(RoleResponder()) as server:
        again = invoke(*run_args(server, tmp_path, "-n", "1", "--resume"))
        asked = {role_of(body) for body in server.requests}
    assert again.exit_code == 0, again.output
    assert asked == {"distill"}  # the conversation is not generated again
    data = json.loads(distilled.read_text())
    assert {c["status"] for c in data["distilled_chunks"]} == {"ok"}
    assert data["final_summary"].startswith("Overall Conversation Topic:")


@pytest.mark.parametrize("replace", [False, True])
def test_stalled_conversations_are_saved_counted_and_replaced_on_request(
    tmp_path: Path, replace: bool
) -> None:
    looping = RoleResponder(
        user=lambda n: "You are so right, thank you so much for sharing that with me!",
        assistant=lambda n: "You are so welcome, thank you for the kind words, I am glad!",
    )
    extra = ("--replace-stalled",) if replace else ()
    with FakeOpenAIServer(looping) as server:
        result = invoke(
            *run_args(server, tmp_path, "-n", "2", "-j", "1", "--no-distill", *extra),
            "--min-rounds",
            "20",
            "--max-rounds",
            "20",
        )
    assert result.exit_code == 0, result.output
    files = [json.loads(p.read_text()) for p in json_files(tmp_path / "conv")]
    assert {f["metadata"]["termination_reason"] for f in files} == {"stalled"}
    assert all(f["total_rounds"] < 20 for f in files)
    report = json.loads((tmp_path / "conv" / "run_report.json").read_text())
    # every replacement stalls too: at most -n of them
    assert len(files) == (4 if replace else 2)
    assert report["counts"]["stalled"] == len(files)
    assert report["counts"]["replaced_stalled"] == (2 if replace else 0)
    assert f"{len(files)} stalled" in result.output


@pytest.mark.parametrize("output", ["out/", "out.jsonl"])
def test_distill_writes_no_notes_as_a_failure_and_redoes_it(tmp_path: Path, output: str) -> None:
    from tests.integration.test_cli_distill import dialogue
    from tests.integration.test_cli_distill import invoke as invoke_distill

    data = tmp_path / "in.jsonl"
    data.write_text(
        "\n".join(json.dumps({"id": f"r{n}", "messages": dialogue(4)}) for n in range(2)) + "\n"
    )
    out = f"{tmp_path}/{output}"
    no_json = RoleResponder(distill=lambda n: "No notes from me.")
    with FakeOpenAIServer(no_json) as server:
        first = invoke_distill(server, "distill", "-i", str(data), "-o", out)
    assert first.exit_code == 1 and "no chunk got usable notes" in first.output
    with FakeOpenAIServer(RoleResponder()) as server:
        again = invoke_distill(server, "distill", "-i", str(data), "-o", out)
    assert again.exit_code == 0, again.output
    assert "2 record(s) distilled" in again.output
