"""PixelSpec: what a model input looks like. Ingestion, the Transform, the serving client and
the model contract share it, so training and serving preprocessing cannot drift apart."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class PixelSpec:
    """What the model input looks like.

    Attributes:
        size: (rows, cols) of the model input; None keeps the original size.
        channels: 1 (colour converted to luma) or 3 (grey repeated).
        window: None (Modality-LUT values as they are), "header" (the first VOI window or
            VOI LUT of the instance, scaled to [0, 1]) or (center, width) scaled to [0, 1].
        frames: which frames of a multi-frame instance: "middle", "first" or "all".
        max_pixels: rows x cols x frames x samples above which an instance is refused.
    """

    size: tuple[int, int] | None = (28, 28)
    channels: int = 1
    window: str | tuple[float, float] | None = None
    frames: str = "middle"
    max_pixels: int = 2**28

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"PixelSpec.channels must be 1 or 3, got {self.channels}")
        if self.frames not in ("middle", "first", "all"):
            raise ValueError(f"PixelSpec.frames must be middle, first or all, got {self.frames!r}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ValueError(f"PixelSpec.size must be (rows, cols) >= 1, got {self.size}")
        if isinstance(self.window, str) and self.window != "header":
            raise ValueError(
                f"PixelSpec.window must be None, 'header' or (center, width), got {self.window!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PixelSpec:
        window = d.get("window")
        size = d.get("size")
        return cls(
            size=tuple(size) if size is not None else None,
            channels=int(d.get("channels", 1)),
            window=tuple(window) if isinstance(window, list | tuple) else window,
            frames=d.get("frames", "middle"),
            max_pixels=int(d.get("max_pixels", 2**28)),
        )
