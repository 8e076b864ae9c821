"""Pictures of a run: the training loss from the HF Trainer's own log, for any framework,
and the eval metric against the step of each scored checkpoint (`eval.checkpoints`).

Both frameworks train with the HF Trainer, which keeps every logged loss in
`trainer_state.json` (`log_history`), in the output folder at the end and in each
checkpoint. LLaMA-Factory also draws `training_loss.png` itself (`plot_loss`); for
FlagEmbedding, and for overlaid curves in a sweep report, hpcft draws from the log.
matplotlib is imported only when drawing (it is in the training stack, not the login node's).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LossCurve = list[tuple[int, float]]
"""(step, loss) pairs in step order."""


def trainer_state(train_dir: Path) -> Path | None:
    """The most complete `trainer_state.json`: the final one, else the latest checkpoint's."""
    final = train_dir / "trainer_state.json"
    if final.is_file():
        return final
    checkpoints = sorted(train_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: _step(p.parent))
    return checkpoints[-1] if checkpoints else None


def _step(checkpoint: Path) -> int:
    tail = checkpoint.name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else -1


def loss_curve(train_dir: Path) -> LossCurve:
    """Every training loss the Trainer logged; empty when there is no log (yet)."""
    path = trainer_state(train_dir)
    if path is None:
        return []
    try:
        history = json.loads(path.read_text()).get("log_history", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [(int(h["step"]), float(h["loss"])) for h in history if isinstance(h, dict) and "loss" in h and "step" in h]


def draw_loss(curves: Sequence[tuple[str, LossCurve]], path: Path, title: str) -> bool:
    """One line per curve; False (nothing drawn) when no curve has a point."""
    curves = [(label, curve) for label, curve in curves if curve]
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, curve in curves:
        ax.plot(
            [s for s, _ in curve], [loss for _, loss in curve], label=label, marker="." if len(curve) < 30 else None
        )
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    if len(curves) > 1:
        ax.legend(fontsize="small")
    save(fig, path)
    return True


def ensure_loss_plot(train_dir: Path, title: str) -> Path | None:
    """`training_loss.png` in the output folder: the framework's own, else drawn from its log."""
    path = train_dir / "training_loss.png"
    if path.is_file() or draw_loss([("train", loss_curve(train_dir))], path, title):
        return path
    return None


def draw_checkpoints(
    points: Sequence[tuple[int, float]], metric: str, best: int | None, path: Path, title: str
) -> bool:
    """The eval metric against the training step of each scored checkpoint (`eval.checkpoints`),
    the best one ringed; False (nothing drawn) without two points."""
    if len(points) < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([s for s, _ in points], [v for _, v in points], marker="o")
    for step, value in points:
        if step == best:
            ax.scatter([step], [value], s=160, facecolors="none", edgecolors="red", label=f"best: step {step}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize="medium")
    if best is not None:
        ax.legend(fontsize="small")
    save(fig, path)
    return True


def save(fig: Any, path: Path) -> None:
    """Write a figure as a PNG (its folder made) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
