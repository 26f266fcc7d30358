"""Training objectives. Each is a small object that declares the attention it needs and builds
inputs, targets and the loss for a batch of right-padded encoded item ids."""
from __future__ import annotations

from ..backbones import BACKBONES, attentions
from .base import Task
from .clm import CLM, CLMLast
from .mlm import MLM
from .plm import PLM
from .rtd import RTD

TASKS: dict[str, type[Task]] = {t.name: t for t in (CLM, CLMLast, MLM, PLM, RTD)}


def valid_tasks(backbone: str) -> list[str]:
    return [n for n, t in TASKS.items() if set(t.ATTENTION) & set(attentions(backbone))]


def valid_backbones(task: str) -> list[str]:
    return [b for b in BACKBONES if set(TASKS[task].ATTENTION) & set(attentions(b))]


def resolve_attention(backbone: str, task: str) -> str:
    """The attention a (backbone, task) pair runs with; a clear error for an invalid pair."""
    if backbone not in BACKBONES:
        raise ValueError(f"backbone {backbone!r} is not available; choose from {sorted(BACKBONES)}")
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not available; choose from {sorted(TASKS)}")
    supported = attentions(backbone)
    for kind in TASKS[task].ATTENTION:  # the task's preferred attention first
        if kind in supported:
            return kind
    raise ValueError(
        f"task {task!r} needs {' or '.join(TASKS[task].ATTENTION)} attention, which backbone "
        f"{backbone!r} does not offer ({', '.join(supported)}); valid backbones for {task!r}: "
        f"{valid_backbones(task)}; valid tasks for {backbone!r}: {valid_tasks(backbone)}"
    )


__all__ = ["TASKS", "Task", "resolve_attention", "valid_tasks", "valid_backbones"]
