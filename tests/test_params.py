"""Factory signatures as parameter schemas: unknown names, missing ones, types, bounds, choices."""

from __future__ import annotations

from typing import Literal, Optional

from harness.params import NonNegativeInt, PositiveInt, check_params, describe_params


def factory(model: str, k: PositiveInt = 10, workers: NonNegativeInt = 0, pooling: Literal["gem", "mean"] = "gem",
            scales: tuple[float, ...] = (1.0,), eps: float = 1e-6, limit: Optional[PositiveInt] = None):
    """A factory."""


def problems(params):
    return {p.param: (p.message, p.suggestion) for p in check_params(factory, params)[1]}


def test_valid_params_are_normalised():
    clean, found = check_params(factory, {"model": "m", "scales": [1, 0.5], "eps": 1, "limit": None})
    assert not found
    assert clean == {"model": "m", "scales": (1.0, 0.5), "eps": 1.0, "limit": None}


def test_every_problem_is_reported():
    found = problems({"k": 0, "workers": -1, "pooling": "gm", "eps": "1e-3", "limits": 3, "limit": 0})
    assert found["model"] == ("missing required parameter", None)
    assert "greater than or equal to 1" in found["k"][0]
    assert "greater than or equal to 0" in found["workers"][0]
    assert found["pooling"][1] == "gem"
    assert "valid number" in found["eps"][0]  # a quoted number is not silently converted
    assert found["limits"] == ("unknown parameter", "limit")
    assert "greater than or equal to 1" in found["limit"][0]


def test_strings_are_not_coerced_to_ints():
    assert "valid integer" in problems({"model": "m", "k": "3"})["k"][0]


def test_var_keyword_accepts_anything():
    def loose(a: int = 1, **extra):
        pass

    assert check_params(loose, {"b": 2, "a": 3}) == ({"b": 2, "a": 3}, [])


def test_describe_params_for_listing():
    info = {p.name: p for p in describe_params(factory)}
    assert info["model"].required and info["model"].annotation == "str"
    assert info["k"].annotation == "int >= 1" and info["k"].default == 10
