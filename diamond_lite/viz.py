"""Pictures for the notebooks: frames, strips of frames, animations and live learning curves.

Frames are ``uint8`` arrays ``(H, W, 3)`` or float tensors/arrays in [-1, 1] shaped ``(3, H, W)``;
``to_image`` turns either into something ``imshow`` shows with crisp pixels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def to_image(frame) -> np.ndarray:
    """``(H, W, 3)`` uint8 from a uint8 frame or a [-1, 1] float frame, channels first or last."""
    if hasattr(frame, "detach"):
        frame = frame.detach().float().cpu().numpy()
    frame = np.asarray(frame)
    if frame.ndim == 3 and frame.shape[0] in (1, 3) and frame.shape[-1] not in (1, 3):
        frame = frame.transpose(1, 2, 0)
    if frame.dtype != np.uint8:
        frame = ((np.clip(frame, -1, 1) + 1) * 127.5).round().astype(np.uint8)
    if frame.shape[-1] == 1:
        frame = frame.repeat(3, axis=-1)
    return frame


def show_frames(
    frames: Sequence,
    titles: Sequence[str] | None = None,
    *,
    columns: int | None = None,
    scale: float = 1.6,
    suptitle: str | None = None,
    row_labels: Sequence[str] | None = None,
):
    """Frames side by side (wrapping after ``columns``), without axes, nearest-neighbour upscaling."""
    import matplotlib.pyplot as plt

    frames = list(frames)
    n = len(frames)
    columns = columns or n
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(scale * columns, scale * rows + (0.3 if suptitle else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i < n:
            ax.imshow(to_image(frames[i]), interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
        else:
            ax.axis("off")
    if row_labels is not None:
        for r, label in enumerate(row_labels):
            axes[r, 0].set_ylabel(label, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    plt.show()


def animate(frames: Sequence, *, fps: int = 15, scale: float = 3.0, titles: Sequence[str] | None = None):
    """An inline animation (HTML5 video-free JavaScript player) of a sequence of frames.

    Several sequences given as a list of lists play side by side (e.g. imagined vs real).
    """
    import matplotlib.pyplot as plt
    from IPython.display import HTML
    from matplotlib import animation

    streams = frames if isinstance(frames[0], (list, tuple)) else [frames]
    streams = [[to_image(f) for f in s] for s in streams]
    length = min(len(s) for s in streams)
    h, w = streams[0][0].shape[:2]
    fig, axes = plt.subplots(1, len(streams), figsize=(scale * len(streams), scale * h / w), squeeze=False)
    images = []
    for k, ax in enumerate(axes[0]):
        ax.axis("off")
        if titles:
            ax.set_title(titles[k], fontsize=9)
        images.append(ax.imshow(streams[k][0], interpolation="nearest"))
    fig.tight_layout()

    def update(t):
        for image, stream in zip(images, streams):
            image.set_data(stream[t])
        return images

    anim = animation.FuncAnimation(fig, update, frames=length, interval=1000 / fps, blit=True)
    plt.close(fig)
    return HTML(anim.to_jshtml(default_mode="loop"))


class LiveCurves:
    """Learning curves redrawn in place while a loop runs (one figure, several panels).

    >>> curves = LiveCurves(["loss"])          # doctest: +SKIP
    >>> for step in range(n): curves.add(step, loss=value)  # redraws every ``every`` calls
    """

    def __init__(self, names: Sequence[str], *, every: int = 20, title: str | None = None, smooth: int = 1) -> None:
        self.names = list(names)
        self.every, self.title, self.smooth = every, title, smooth
        self.steps: dict[str, list] = {n: [] for n in self.names}
        self.values: dict[str, list] = {n: [] for n in self.names}
        self._handle = None
        self._calls = 0

    def add(self, step: int, **values: float) -> None:
        for name, value in values.items():
            self.steps[name].append(step)
            self.values[name].append(float(value))
        self._calls += 1
        if self._calls % self.every == 0:
            self.draw()

    def draw(self):
        import matplotlib.pyplot as plt
        from IPython.display import display

        fig, axes = plt.subplots(1, len(self.names), figsize=(4 * len(self.names), 2.8), squeeze=False)
        for ax, name in zip(axes[0], self.names):
            x, y = np.array(self.steps[name]), np.array(self.values[name])
            if len(y) and self.smooth > 1 and len(y) >= self.smooth:
                kernel = np.ones(self.smooth) / self.smooth
                ax.plot(x, y, alpha=0.3, color="C0")
                ax.plot(x[self.smooth - 1 :], np.convolve(y, kernel, mode="valid"), color="C0")
            else:
                ax.plot(x, y, color="C0")
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        if self.title:
            fig.suptitle(self.title)
        fig.tight_layout()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)
