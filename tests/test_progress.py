"""Step progress (popcorn.progress): reported only where someone watches, words with an ETA."""

from __future__ import annotations

import io
import threading

from rich.console import Console

from popcorn.progress import Counts, StepClock, report, reporting, step_callback


def test_nothing_is_reported_and_no_callback_is_made_without_a_reporter():
    assert step_callback("clip", 50) is None
    report("clip", 1, 50)  # no reporter: nothing happens, nothing fails


def test_a_step_callback_reports_every_step_and_hands_the_state_back():
    seen: list[tuple[str, int, int]] = []
    with reporting(lambda *event: seen.append(event)):
        callback = step_callback("cover", 3)
        assert callback is not None
        state = {"latents": object()}
        for step in range(3):
            assert callback(None, step, 999, state) is state
    assert seen == [("cover", 0, 3), ("cover", 1, 3), ("cover", 2, 3), ("cover", 3, 3)]
    assert step_callback("cover", 3) is None  # the block has ended


def test_a_failing_reporter_never_breaks_the_work():
    calls: list[int] = []

    def broken(what: str, done: int, total: int) -> None:
        calls.append(done)
        raise OSError("the terminal went away")

    with reporting(broken):
        callback = step_callback("clip", 2)  # reports step 0: the reporter fails, quietly
        assert callback is not None
        state = {"latents": 1}
        assert callback(None, 0, 999, state) is state  # the denoising loop goes on
        report("clip", 2, 2)
    assert calls == [0, 1, 2]  # it was called every time, and every failure was contained


def test_other_threads_report_nowhere_unless_they_watch_too():
    seen: list[object] = []
    with reporting(seen.append):
        worker = threading.Thread(target=report, args=("clip", 1, 2))
        worker.start()
        worker.join()
    assert seen == []


def test_the_time_left_follows_the_rate_since_the_first_step(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("popcorn.progress.time.monotonic", lambda: now[0])
    clock = StepClock()
    assert clock.words("clip", 0, 50) == "clip: step 0/50"
    now[0] = 130.0  # loading and the first step: not counted in the rate
    assert clock.words("clip", 1, 50) == "clip: step 1/50"
    now[0] = 132.0
    assert clock.words("clip", 2, 50) == "clip: step 2/50, 1:36 left"  # 2 s a step, 48 to go
    now[0] = 228.0
    assert clock.words("clip", 50, 50) == "clip: step 50/50"
    assert StepClock().words("x", 1, 7200) == "x: step 1/7200"


def test_loading_our_models_leaves_the_hubs_download_bars_on():
    """A first download (tens of GB for a clip model) must show its size and progress."""
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars

    from popcorn.predictor.encoders import _transformers
    from popcorn.retrieval.embedders import Embedder

    enable_progress_bars()
    assert not are_progress_bars_disabled()
    Embedder().encode(["a cat on a skateboard"])
    _transformers("the predictor")
    assert not are_progress_bars_disabled()


def test_a_model_load_is_logged_with_its_time_and_memory(caplog):
    import logging

    from popcorn.progress import logged_load

    with caplog.at_level(logging.INFO, logger="popcorn"), logged_load("ltx (Lightricks/LTX)"):
        pass
    (record,) = [r for r in caplog.records if r.name == "popcorn.load"]
    assert record.getMessage().startswith("loaded ltx (Lightricks/LTX) in 0.0 s (peak RSS ")


# --- counted progress (popcorn.progress.Counts) -----------------------------------------------


def _log() -> tuple[Console, io.StringIO]:
    """A console writing to a file, as stderr is under nohup or a scheduler."""
    stream = io.StringIO()
    return Console(file=stream), stream


def test_counted_progress_off_a_terminal_is_a_plain_line_per_five_percent(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("popcorn.progress.time.monotonic", lambda: now[0])
    console, stream = _log()
    with Counts(console, heartbeat=3600) as counts:
        counts.update("generating", 0, 200, failed=0)
        for done in range(1, 201):
            now[0] += 2.0
            counts.update("generating", done, 200, failed=done // 100)
        counts.update("generating", 200, 200, failed=2)  # a repeated last update: no new line
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    assert len(lines) == 21  # the start, then every 10 of the 200 (5%), the last at the end
    assert lines[0] == "popcorn: generating: 0/200 (0%), 0 failed, 0:00 elapsed"
    assert lines[1] == "popcorn: generating: 10/200 (5%), 0 failed, 0:20 elapsed, 6:20 left"
    assert lines[10] == "popcorn: generating: 100/200 (50%), 1 failed, 3:20 elapsed, 3:20 left"
    assert lines[-1] == "popcorn: generating: 200/200 (100%), 2 failed, 6:40 elapsed"


def test_small_batches_get_a_line_per_item_and_no_failure_count_unless_given():
    console, stream = _log()
    with Counts(console, heartbeat=3600) as counts:
        for done in range(4):
            counts.update("script", done, 3)
    counts_seen = [line.split(":")[2].split()[0] for line in stream.getvalue().splitlines()]
    assert counts_seen == ["0/3", "1/3", "2/3", "3/3"]
    assert "failed" not in stream.getvalue()


def test_the_time_left_leaves_out_the_wait_before_the_first_item(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("popcorn.progress.time.monotonic", lambda: now[0])
    console, stream = _log()
    with Counts(console, heartbeat=3600) as counts:
        counts.update("generating", 0, 10)
        now[0] = 60.0  # a model loads, then the first query is done
        counts.update("generating", 1, 10)
        now[0] = 62.0  # each query after it takes 2 s
        counts.update("generating", 2, 10)
    lines = stream.getvalue().splitlines()
    assert lines[2] == "popcorn: generating: 2/10 (20%), 1:02 elapsed, 0:16 left"


def test_quiet_work_still_writes_a_line_every_heartbeat():
    """A query that takes minutes (a clip rendering) must not leave a log silent."""
    console, stream = _log()
    with Counts(console, heartbeat=0.05) as counts:
        counts.update("generating", 0, 2, failed=0)
        for _ in range(200):  # a guard against hanging, not a timing
            if len(stream.getvalue().splitlines()) >= 3:
                break
            threading.Event().wait(0.05)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3 and all(line.startswith("popcorn: generating: 0/2 ") for line in lines)


def test_finished_work_gets_no_more_heartbeat_lines():
    console, stream = _log()
    with Counts(console, heartbeat=0.01) as counts:
        counts.update("embedding", 5, 5)
        threading.Event().wait(0.2)
    assert stream.getvalue().splitlines() == ["popcorn: embedding: 5/5 (100%), 0:00 elapsed"]
