"""Context features: flattening nested data into named features and hashing them to a vector."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from relevo.learning.features import FeatureHasher, flatten


def test_flatten_names_categories_numbers_and_lists() -> None:
    raw = {
        "plan": "pro",
        "orders": 3,
        "ltv": 1.5,
        "verified": True,
        "churned": False,
        "segment": ["vip", "newsletter"],
        "context": {"device": "mobile", "page": {"path": "/cart"}},
        "email": None,
    }
    assert flatten(raw) == {
        "plan=pro": 1.0,
        "orders": 3.0,
        "ltv": 1.5,
        "verified=true": 1.0,
        "churned=false": 1.0,
        "segment=vip": 1.0,
        "segment=newsletter": 1.0,
        "context.device=mobile": 1.0,
        "context.page.path=/cart": 1.0,
    }


def test_flatten_leaves_out_what_is_not_a_feature() -> None:
    raw = {
        "score": math.nan,
        "limit": math.inf,
        "tags": ["a", None, {"nested": 1}, ["x"], 2, True],
        "empty": {},
    }
    assert flatten(raw) == {"tags=a": 1.0, "tags=2": 1.0, "tags=true": 1.0}


def test_flatten_refuses_values_that_are_not_json() -> None:
    with pytest.raises(TypeError, match="'seen'"):
        flatten({"seen": datetime(2026, 1, 1, tzinfo=UTC)})


def test_the_vector_has_a_bias_and_unit_norm_features() -> None:
    hasher = FeatureHasher(32)
    vector = hasher.transform({"segment=s1": 1.0, "age": 2.0})
    assert vector.shape == (32,)
    assert vector.dtype == np.float64
    assert vector[0] == 1.0
    assert np.linalg.norm(vector[1:]) == pytest.approx(1.0)
    assert np.count_nonzero(vector) == 3
    assert hasher.transform({}).tolist() == [1.0] + [0.0] * 31


def test_hashing_is_stable_across_processes_and_versions() -> None:
    """Pinned columns and signs: a change here invalidates every saved model."""
    vector = FeatureHasher(32).transform({"segment=s1": 1.0, "context.device=mobile": 1.0})
    assert vector[29] == pytest.approx(math.sqrt(0.5))
    assert vector[15] == pytest.approx(-math.sqrt(0.5))


def test_features_keep_their_relative_values() -> None:
    vector = FeatureHasher(1 << 16).transform({"a": 3.0, "b": -4.0})
    assert sorted(np.abs(vector[1:][vector[1:] != 0]).tolist()) == pytest.approx([0.6, 0.8])


def test_interactions_cross_every_feature_of_two_prefixes() -> None:
    features = {
        "segment=vip": 1.0,
        "segment=new": 1.0,
        "segmentation=x": 1.0,  # not a "segment" feature
        "context.device=mobile": 1.0,
        "context.os=ios": 1.0,
    }
    plain = FeatureHasher(1 << 16).transform(features)
    crossed = FeatureHasher(1 << 16, [("segment", "context.device")]).transform(features)
    assert np.count_nonzero(plain) == 1 + 5
    assert np.count_nonzero(crossed) == 1 + 5 + 2
    assert crossed[0] == 1.0
    assert np.linalg.norm(crossed[1:]) == pytest.approx(1.0)


def test_an_interaction_of_a_prefix_with_itself_crosses_each_pair_once() -> None:
    features = {"segment=a": 1.0, "segment=b": 1.0, "segment=c": 1.0}
    crossed = FeatureHasher(1 << 16, [("segment", "segment")]).transform(features)
    assert np.count_nonzero(crossed) == 1 + 3 + 3


def test_a_numeric_feature_crosses_by_its_value() -> None:
    hasher = FeatureHasher(1 << 16, [("hour", "segment")])
    one = hasher.transform({"hour": 1.0, "segment=vip": 1.0})
    two = hasher.transform({"hour": 2.0, "segment=vip": 1.0})
    only_cross = FeatureHasher(1 << 16).transform({"hour*segment=vip": 1.0})
    column = int(np.flatnonzero(only_cross[1:])[0]) + 1
    # the cross is hour x 1 (2) next to hour (2) and the segment (1), then the norm is 3
    assert abs(two[column]) == pytest.approx(2 / 3)
    assert abs(one[column]) == pytest.approx(1 / math.sqrt(3))


def test_the_same_features_give_the_same_vector_from_any_hasher() -> None:
    features = flatten({"segment": ["a", "b"], "context": {"device": "tv"}, "n": 0.5})
    pairs = [("segment", "context.device")]
    first = FeatureHasher(64, pairs).transform(features)
    second = FeatureHasher(64, pairs).transform(dict(reversed(features.items())))
    assert first == pytest.approx(second)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        FeatureHasher(1)
    with pytest.raises(ValueError, match="finite"):
        FeatureHasher(8).transform({"x": math.inf})


def test_parts_encoded_apart_give_the_vector_of_the_whole() -> None:
    """A profile's part is encoded once and joined with each request's part: the same vector,
    crosses between the parts included."""
    hasher = FeatureHasher(32, [("segments", "context.device")])
    profile = {"segments=vip": 1.0, "segments=runners": 1.0, "traits.plan=gold": 1.0}
    request = {"context.device=mobile": 1.0, "context.hour": 0.5}
    whole = hasher.transform({**profile, **request})
    joined = hasher.vector(hasher.encode(profile), hasher.encode(request))
    np.testing.assert_allclose(joined, whole)
    assert not np.allclose(whole, hasher.transform(profile))
