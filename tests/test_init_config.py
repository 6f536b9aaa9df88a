"""``auditor init-config``: every setting written with its default and meaning, read back to
the defaults, and unknown keys named with the nearest known one."""

from __future__ import annotations

import dataclasses
import re
import tomllib

import pytest
from click.testing import CliRunner

from auditor.cli import cli
from auditor.cli.options import flag_of
from auditor.config import (
    AuditConfig,
    DetectConfig,
    config_from_dict,
    config_toml,
    described,
    load_config,
    settings_of,
)
from auditor.errors import ConfigError

MEANINGS = {key: described(f).meaning for key, f in settings_of(AuditConfig)}
UNSET_EXAMPLES = {
    key: described(f).example for key, f in settings_of(AuditConfig) if f.default is None
}


def defaults() -> dict[str, object]:
    """Every setting's key as in MEANINGS (``detect.`` for the [detect] table) and default."""
    top = {k: v for k, v in dataclasses.asdict(AuditConfig()).items() if k != "detect"}
    return top | {f"detect.{k}": v for k, v in dataclasses.asdict(DetectConfig()).items()}


def keys() -> list[str]:
    return list(defaults())


def test_every_setting_has_a_meaning_and_every_unset_one_an_example():
    assert sorted(MEANINGS) == sorted(keys())
    unset = [k for k, v in defaults().items() if v is None]
    assert sorted(UNSET_EXAMPLES) == sorted(unset)
    assert all(m and "\n" not in m for m in MEANINGS.values())


def test_the_written_file_loads_back_to_the_defaults(tmp_path):
    result = CliRunner().invoke(cli, ["init-config", str(tmp_path / "audit.toml")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "audit.toml").read_text()
    assert load_config(tmp_path / "audit.toml") == AuditConfig()
    assert max(len(line) for line in text.splitlines()) <= 100
    for key in keys():  # each setting, with its meaning on the line above it
        name = key.split(".")[-1]
        assert re.search(rf"# {re.escape(MEANINGS[key])}\n(# )?{name} = ", text), key
    raw = tomllib.loads(text)
    assert raw["detect"] == dataclasses.asdict(DetectConfig())
    assert "target_layer" not in raw and '# target_layer = "layer4"' in text


def test_the_commented_examples_are_valid_settings():
    text = re.sub(r"^# (\w+ = )", r"\1", config_toml(), flags=re.MULTILINE)
    config = config_from_dict(tomllib.loads(text))
    assert {k: getattr(config, k) for k in UNSET_EXAMPLES} == UNSET_EXAMPLES


def test_every_setting_has_an_option_a_toml_key_and_a_meaning(tmp_path):
    """A new setting is one field: its command-line option, its audit.toml key and its
    meaning come from it, and the option reaches the config."""
    audit = cli.commands["audit"]
    options = {opt for p in audit.params for opt in p.opts}
    text = config_toml()
    for key, f in settings_of(AuditConfig):
        assert flag_of(key, f) in options, key
        assert described(f).meaning in text, key
        assert re.search(rf"^(# )?{key.split('.')[-1]} = ", text, flags=re.MULTILINE), key
    seen = {}

    def fake(*args, config, **kwargs):
        seen["config"] = config
        raise SystemExit(0)

    import auditor.runner.workflow as workflow

    real, workflow.audit_to_dir = workflow.audit_to_dir, fake
    try:
        CliRunner().invoke(cli, ["audit", "--model", "m", "--data", "d", "--out",
                                 str(tmp_path / "o"), "--detect-min-n", "7", "--workers", "2",
                                 "--no-keep-aspect", "--group-by", "a", "--group-by", "b",
                                 "--methods", "saliency,cam", "--max-skipped", "0.25"])  # fmt: skip
    finally:
        workflow.audit_to_dir = real
    config = seen["config"]
    assert config.detect.min_n == 7 and config.num_workers == 2 and not config.keep_aspect
    assert config.group_by == ("a", "b") and config.methods == ("saliency", "cam")
    assert config.max_skipped == 0.25 and config.image_size == 224  # not given: the default


def test_a_setting_out_of_range_is_a_usage_error_naming_the_option(tmp_path):
    result = CliRunner().invoke(cli, ["audit", "--model", "m", "--data", "d", "--out",
                                      str(tmp_path / "o"), "--detect-alpha", "1.5"])  # fmt: skip
    assert result.exit_code == 2 and "Expected detect.alpha in (0, 1), got 1.5" in result.output


def test_options_given_by_the_caller_win_over_the_file(tmp_path):
    (tmp_path / "audit.toml").write_text(config_toml())
    config = load_config(tmp_path / "audit.toml", batch_size=8, methods=("saliency",))
    assert config == AuditConfig(batch_size=8, methods=("saliency",))


def test_an_existing_file_is_kept_unless_forced(tmp_path):
    path = tmp_path / "audit.toml"
    path.write_text("batch_size = 8\n")
    refused = CliRunner().invoke(cli, ["init-config", str(path)])
    assert refused.exit_code == 1
    assert refused.output == f"Error: {path}: already exists; add --force to overwrite it.\n"
    assert path.read_text() == "batch_size = 8\n"
    forced = CliRunner().invoke(cli, ["init-config", str(path), "--force"])
    assert forced.exit_code == 0 and path.read_text() == config_toml()


def test_the_default_path_is_audit_toml_in_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(cli, ["init-config"]).exit_code == 0
    assert (tmp_path / "audit.toml").read_text() == config_toml()


@pytest.mark.parametrize("toml,message", [
    ("batchsize = 8", "unknown key 'batchsize'; did you mean 'batch_size'?"),
    ("[detect]\nminn = 5", "unknown key 'detect.minn'; did you mean 'detect.min_n'?"),
    ("min_n = 5", "unknown key 'min_n'; it belongs in [detect]."),
    ("[detect]\nimage_size = 32", "unknown key 'detect.image_size'; it belongs in the top level"),
    ("zzz = 1", "unknown key 'zzz'."),
])  # fmt: skip
def test_an_unknown_key_is_named_with_the_nearest_known_one(toml, message, tmp_path):
    path = tmp_path / "audit.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: {message}")


def test_an_unknown_key_stops_the_audit_before_any_work(tmp_path):
    path = tmp_path / "audit.toml"
    path.write_text("batchsize = 8\n")
    args = ["--model", "resnet18", "--data", "none.json", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, ["audit", *args, "--config", str(path)])
    assert result.exit_code == 2
    assert f"{path}: unknown key 'batchsize'; did you mean 'batch_size'?" in result.output
    assert "Traceback" not in result.output
