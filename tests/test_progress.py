"""Progress without a terminal: a line when due (every `every_s` seconds), figures computed only then."""

from __future__ import annotations

from olsmooth.engine.progress import Progress


def test_lines_without_a_terminal_are_printed_only_when_due():
    lines: list[str] = []
    every_step = Progress(3, "epoch 1/2", log=lines.append, every_s=0.0)
    for _ in range(3):
        if every_step.due():
            every_step.show({"loss": "0.5"})
        every_step.update()
    assert lines == [f"epoch 1/2  step {i}/3  loss 0.5" for i in (1, 2, 3)]
    never = Progress(3, "eval", log=lines.append, every_s=1e9)
    assert not never.due()
    disabled = Progress(3, "eval", enabled=False, log=lines.append, every_s=0.0)
    assert not disabled.due()
