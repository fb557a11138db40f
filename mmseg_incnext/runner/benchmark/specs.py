"""What the benchmark times: a contender (:class:`ModelSpec`) and a table of them
(:class:`Comparison`), and the ``--only`` restriction of the tables."""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

Features = Callable[[torch.Tensor], Sequence[torch.Tensor]]


@dataclass(frozen=True)
class ModelSpec:
    """One model to time.

    ``build()`` returns the model, converted to each layout afterwards; with
    ``builds_layout`` it is ``build(channels_last)`` instead and builds the model for the
    layout, as our configs do. ``features`` turns the model into the function that is
    timed (its output: a tensor or a sequence); ``modes`` are the steps it runs.
    ``op_seconds(x)``, for a contender whose work torch's profiler does not see (ONNX
    Runtime), gives the seconds per op type of one inference on ``x`` for ``--profile``.
    ``arithmetic``: the number format its convolutions and matrix products run in
    (``'fp32'``, ``'bf16'`` or ``'int8'``), whose measured peak gives its hardware floor.
    """
    name: str
    build: Callable[..., nn.Module]
    features: Callable[[nn.Module], Features]
    builds_layout: bool = False
    modes: Tuple[str, ...] = ('infer', 'train')
    op_seconds: Optional[Callable[[torch.Tensor], Dict[str, float]]] = None
    arithmetic: str = 'fp32'


@dataclass(frozen=True)
class Comparison:
    """A table: its contenders, the reference columns (label -> the models whose best
    speed, over implementations and layouts, is the reference), and control pairs (a model
    and an identical copy, whose gap is the noise of the run); ``config``, where every
    contender runs that segmentor config, for the hardware floor under each."""
    title: str
    models: Tuple[ModelSpec, ...]
    references: Dict[str, Tuple[ModelSpec, ...]]
    controls: Tuple[Tuple[ModelSpec, ModelSpec], ...] = ()
    config: Optional[str] = None

    def with_models(self, keep: Callable[[ModelSpec], bool]) -> Optional['Comparison']:
        """The comparison restricted to ``keep`` (references always stay), or None if no
        contender besides the references is left."""
        refs = {m for ms in self.references.values() for m in ms}
        models = tuple(m for m in self.models if m in refs or keep(m))
        if all(m in refs for m in models):
            return None
        controls = tuple(pair for pair in self.controls if all(m in models for m in pair))
        return Comparison(self.title, models, self.references, controls, self.config)


def select(comparisons: Sequence[Comparison], only: Optional[Sequence[str]]
           ) -> List[Comparison]:
    """The comparisons restricted to the models whose names contain one of ``only``
    (case-insensitive; references stay); all of them if ``only`` is empty. Exits naming
    the models if nothing matches."""
    if not only:
        return list(comparisons)
    wanted = [s.lower() for s in only]
    kept = [c.with_models(lambda m: any(s in m.name.lower() for s in wanted))
            for c in comparisons]
    kept = [c for c in kept if c is not None]
    if not kept:
        raise SystemExit(f'--only {" ".join(only)} matches no model; models: '
                         + ', '.join(m.name for c in comparisons for m in c.models))
    return kept
