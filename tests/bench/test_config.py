import json

import pytest

from dynlen.engine.config import LengthConfig, resolve_config
from dynlen.errors import UserError


def test_counts_replay_published_configuration():
    c = LengthConfig.parse("269,253,252,202,104,34")
    assert c.kind == "counts"
    assert c.keep_counts(384) == [269, 253, 252, 202, 104, 34]
    # padding goes first: a 150-token example only loses real tokens from layer 5 on
    assert c.keep_counts(150) == [150, 150, 150, 150, 104, 34]


def test_ratios_follow_the_real_length():
    c = LengthConfig.parse("ratios:1,0.5,0.25")
    assert c.keep_counts(100) == [100, 50, 25]
    assert c.keep_counts(7) == [7, 4, 2]
    assert c.keep_counts(1) == [1, 1, 1]


def test_constant_ratio_compounds_per_layer():
    c = LengthConfig.constant(4, 0.5, start_layer=2)
    assert c.values == (1.0, 0.5, 0.25, 0.125)


def test_json_round_trip(tmp_path):
    for c in (LengthConfig.parse("269,253,252,202,104,34"), LengthConfig.parse("ratios:1,0.9,0.8")):
        path = tmp_path / "c.json"
        c.save(path)
        assert json.loads(path.read_text())["kind"] == c.kind
        assert LengthConfig.load(path) == c
        assert resolve_config(str(path), c.num_layers) == c


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("1,0.9,0.95", "layer 3 keeps 0.95, more than layer 2"),
        ("ratios:1,0,0", "layer 2: ratio 0"),
        ("ratios:1.5,1", "layer 1: ratio 1.5"),
        ("counts:300,0", "layer 2: count 0"),
        ("counts:400,300", "layer 1: count 400"),
        ("abc", "cannot read configuration"),
    ],
)
def test_invalid_values_name_the_layer(text, fragment):
    with pytest.raises(UserError, match=fragment):
        LengthConfig.parse(text)


def test_wrong_number_of_layers_is_a_clear_error():
    with pytest.raises(UserError, match="has 3 values but .* has 6 encoder layers"):
        LengthConfig.parse("ratios:1,1,1").check_layers(6)


def test_malformed_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"values": [1, 2]}')
    with pytest.raises(UserError, match="configuration file is JSON like"):
        LengthConfig.load(path)


@pytest.mark.parametrize(
    "text",
    [
        "ratios:1,1,0.6,0.4,0.3,0.05",
        "ratios:1,0.9,0.81,0.729,0.6561,0.59049@lookahead+question",
        "counts:300,250,90,12",
    ],
)
def test_precise_label_parses_back_to_the_same_configuration(text):
    config = LengthConfig.parse(text)
    assert LengthConfig.parse(config.label(precise=True)) == config
    if "0.6561" in text:
        assert LengthConfig.parse(config.label()) != config, "the table label rounds to 3 digits"
