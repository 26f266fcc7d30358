"""TensorBoard scalars of a training run, written beside its checkpoint (`tensorboard --logdir
<output_dir>/tensorboard` shows them): the training loss, the learning rate and the validation
metrics after every epoch."""
from __future__ import annotations

from pathlib import Path

LOG_DIR = "tensorboard"


class RunLog:
    """One run's scalars; a no-op when disabled or on a rank other than the main one."""

    def __init__(self, output_dir: str | Path, enabled: bool = True):
        self._writer = None
        if enabled:
            # imported here: a run with the log switched off never needs the package
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(Path(output_dir) / LOG_DIR))

    def epoch(self, step: int, loss: float, lr: float) -> None:
        """The training scalars of one epoch (`step` counts epochs from 1, over all windows)."""
        self._add(step, {"train/loss": loss, "train/lr": lr})

    def metrics(self, step: int, values: dict, split: str) -> None:
        """Evaluation metrics after epoch `step`: the numbers of an evaluation report tagged
        `<split>/<metric>`, and those of its sections of numbers (each seen-item policy)
        `<split>/<section>/<metric>`; deeper breakdowns are left to metrics.json."""
        scalars = {}
        for name, value in values.items():
            if _number(value):
                scalars[f"{split}/{name}"] = value
            elif isinstance(value, dict) and value and all(_number(v) for v in value.values()):
                scalars.update({f"{split}/{name}/{k}": v for k, v in value.items()})
        self._add(step, scalars)

    def _add(self, step: int, scalars: dict[str, float]) -> None:
        if self._writer is None:
            return
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()  # a run stopped mid-way keeps what it logged

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_scalars(output_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of a run's log, as TensorBoard reads it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(output_dir) / LOG_DIR))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
