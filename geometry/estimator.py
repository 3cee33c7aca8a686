"""scikit-learn's estimator protocol for layerscan's layouts, without importing scikit-learn."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np


class Estimator:
    """`get_params`, `set_params` and a readable repr, as `sklearn.base.BaseEstimator` gives
    them (so `sklearn.base.clone` works), for estimators whose `__init__` stores each argument
    under its own name. Importing scikit-learn for them cost every scan about 0.3 s of
    start-up (scipy.stats included), for methods a scan never calls.
    """

    @classmethod
    def _param_names(cls) -> list[str]:
        parameters = inspect.signature(cls.__init__).parameters.values()
        return sorted(
            p.name for p in parameters if p.name != "self" and p.kind is not p.VAR_KEYWORD
        )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """{parameter: value} of every `__init__` argument (`deep` is accepted, as in sklearn:
        these estimators hold no estimators)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Estimator:
        """Set parameters by name; an unknown name is an error."""
        names = self._param_names()
        for name, value in params.items():
            if name not in names:
                raise ValueError(
                    f"invalid parameter {name!r} for {type(self).__name__}; "
                    f"valid parameters: {', '.join(names)}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        params = ", ".join(f"{name}={value!r}" for name, value in self.get_params().items())
        return f"{type(self).__name__}({params})"


def seed_of(random_state: int | np.random.RandomState | None) -> int:
    """An int seed from a scikit-learn style random_state: an int as it is, a RandomState's
    next draw, None a fresh random one (numpy's global state, as sklearn takes it)."""
    if isinstance(random_state, int | np.integer):
        return int(random_state)
    if random_state is None:
        return int(np.random.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    raise ValueError(
        f"{random_state!r} cannot seed a random state: use an int, a numpy RandomState or None"
    )
