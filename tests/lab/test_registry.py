"""The registry of a lab extension point's kinds."""

from __future__ import annotations

import pytest

from kiban.lab.proposers import ProposerError


def test_a_new_kind_registers_and_a_wrong_one_is_refused():
    from kiban.lab.proposers.design import RandomProposer
    from kiban.lab.registry import Registry

    registry = Registry("proposer", {}, ProposerError)

    class Shuffled(RandomProposer):
        kind = "shuffled"

    assert registry.register(Shuffled) is Shuffled and registry.get("shuffled") is Shuffled
    with pytest.raises(ProposerError, match="already registered"):
        registry.register(Shuffled)

    class NoOptions(RandomProposer):
        kind = "plain"
        Options = dict

    with pytest.raises(ProposerError, match="`Options` must be a dataclass"):
        registry.register(NoOptions)


def test_an_unknown_kind_names_the_closest_and_the_known_ones():
    from kiban.lab.registry import Registry

    registry = Registry(
        "proposer", {"sobol": "kiban.lab.proposers.design:SobolProposer"}, ProposerError
    )
    with pytest.raises(
        ProposerError,
        match=r"^unknown proposer kind 'sobl' \(did you mean "
        r"'sobol'\?\); known kinds: sobol$",
    ):
        registry.get("sobl")
    assert registry.get("sobol").kind == "sobol" and "sobol" in registry


def test_a_class_registered_under_another_name_is_refused():
    from kiban.lab.proposers.design import SobolProposer
    from kiban.lab.registry import Registry

    registry = Registry(
        "proposer", {"halton": "kiban.lab.proposers.design:SobolProposer"}, ProposerError
    )
    with pytest.raises(ProposerError, match="says kind 'sobol', registered as 'halton'"):
        registry.get("halton")
    assert SobolProposer.kind == "sobol"
