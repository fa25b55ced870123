"""Typed config: YAML + dotted overrides, unknown keys and wrong types refused with the key named."""
import pytest

from trainers.config import ConfigError, config_hash, load_config
from workflows.speaker import SpeakerConfig, validate


def test_defaults_yaml_and_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  lr: 0.01\n  epochs: 3\nhead:\n  name: arcface\n  m: 0.3\n")
    cfg = load_config(SpeakerConfig, path, ["train.epochs=5", "head.s=16", "model.encoder=resnet34"])
    assert cfg.train.lr == 0.01 and cfg.train.epochs == 5
    assert cfg.head == {"name": "arcface", "m": 0.3, "s": 16}
    assert cfg.model.encoder == "resnet34"
    assert cfg.data.sample_rate == 16000


def test_replacing_head_drops_old_kwargs():
    cfg = load_config(SpeakerConfig, None, ["head.m=0.3", "head={name: softmax}"])
    assert cfg.head == {"name": "softmax"}


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "unknown config key 'train.lrr'"),
    ("nosuch.key=1", "unknown config key 'nosuch'"),
    ("train.epochs=abc", "train.epochs' must be int"),
    ("data.skip_bad=3", "data.skip_bad' must be bool"),
])
def test_bad_keys_and_types(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(SpeakerConfig, None, [override])


def test_missing_or_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(SpeakerConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(SpeakerConfig, bad)


@pytest.mark.parametrize("override, message", [
    ("model.encoder=nonet", "unknown encoder 'nonet'"),
    ("head={name: nohead}", "unknown head 'nohead'"),
    ("head.bogus=1", "bogus"),
    ("train.optimizer=rmsprop", "unknown optimizer"),
])
def test_validate_fails_before_data(override, message):
    with pytest.raises(ValueError, match=message):
        validate(load_config(SpeakerConfig, None, [override]))


def test_hash_changes_with_config():
    a = load_config(SpeakerConfig)
    b = load_config(SpeakerConfig, None, ["train.lr=0.5"])
    assert config_hash(a) == config_hash(load_config(SpeakerConfig)) != config_hash(b)
