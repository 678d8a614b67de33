"""Typed config: YAML (nested or dotted) and --key value overrides, checked."""

import pytest

from rlvr.core.config import TrainConfig, load_config


def test_defaults_run_a_tiny_job():
    cfg = load_config()
    assert isinstance(cfg, TrainConfig) and cfg.model.name_or_path == "tiny"


def test_yaml_nested_and_dotted_then_cli(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("algorithm: rloo\nrollout:\n  samples_per_prompt: 8\noptim.lr: 0.001\n")
    cfg = load_config(p, ["--optim.lr", "0.5", "--rl.kl_coef=0.1", "--run.resume"])
    assert cfg.algorithm == "rloo" and cfg.rollout.samples_per_prompt == 8
    assert cfg.optim.lr == 0.5 and cfg.rl.kl_coef == 0.1 and cfg.run.resume is True


def test_bad_values_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="samples_per_prompt"):
        load_config(None, ["--rollout.samples_per_prompt", "many"])
    with pytest.raises(ValueError, match="nonexistent"):
        load_config(None, ["--rollout.nonexistent", "1"])
    with pytest.raises(ValueError, match="grpo needs rollout.samples_per_prompt >= 2"):
        load_config(None, ["--rollout.samples_per_prompt", "1"])
    with pytest.raises(ValueError, match="mini_batches_per_epoch"):
        load_config(None, ["--rl.mini_batches_per_epoch", "3"])
    p = tmp_path / "bad.yaml"
    p.write_text("- a list\n")
    with pytest.raises(ValueError, match="bad.yaml: expected a mapping"):
        load_config(p)
    with pytest.raises(FileNotFoundError, match="neither a file nor a bundled config"):
        load_config("no_such_config")


# -- where a bad setting came from -----------------------------------------------------------------

def test_a_typo_on_the_command_line_is_the_command_line_s(tmp_path):
    p = tmp_path / "base.yaml"
    p.write_text("algorithm: grpo\nrollout.samples_per_prompt: 8\n")
    with pytest.raises(ValueError) as e:
        load_config(p, ["--rollout.samples_per_promt", "4"])
    assert str(e.value) == ("command line: --rollout.samples_per_promt is not a setting; "
                            "did you mean rollout.samples_per_prompt?")
    assert "base.yaml" not in str(e.value)  # the file is fine: it is not blamed
    with pytest.raises(ValueError, match=r"^command line: bad setting --rollout.max_turns many: "
                                         r"Value 'many' .* could not be converted to Integer"):
        load_config(p, ["--rollout.max_turns", "many"])
    with pytest.raises(ValueError, match=r"--samples_per_prompt is not a setting; did you mean "
                                         r"rollout.samples_per_prompt\?"):
        load_config(None, ["--samples_per_prompt", "4"])


def test_a_bad_key_or_value_in_the_yaml_names_the_file_and_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("algorithm: grpo\nrollout:\n  max_turns: 2\n  samples_per_promt: 4\n")
    with pytest.raises(ValueError) as e:
        load_config(p, ["--run.steps", "1"])
    assert str(e.value) == (f"{p}:4: 'rollout.samples_per_promt' is not a setting; "
                            f"did you mean rollout.samples_per_prompt?")
    p.write_text("algorithm: grpo\n\noptim.lr: fast\n")
    with pytest.raises(ValueError, match=rf"^{p}:3: bad setting 'optim.lr': Value 'fast'"):
        load_config(p)


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("algorithm: grpo\nrollout:\n  max_turns: [1, 2\nrun.steps: 3\n")
    # the flow list is never closed: yaml notices on line 4, at the ':' of run.steps
    with pytest.raises(ValueError, match=rf"^{p}:4: not valid YAML \(expected ',' or ']', but "
                                         rf"got ':' at column 10\)$"):
        load_config(p)
    p.write_text("algorithm: grpo\n\tsteps: 1\n")  # a tab where YAML wants spaces
    with pytest.raises(ValueError, match=rf"^{p}:2: not valid YAML"):
        load_config(p)


# -- rlvr train --print-config and --help ----------------------------------------------------------

def test_print_config_is_the_merged_typed_config_with_each_field_documented(tmp_path, capsys):
    from rlvr.cli import main

    assert main(["train", "grpo_calculator", "--print-config", "--rl.kl_coef", "0.25",
                 "--run.steps", "3"]) == 0
    text = capsys.readouterr().out
    # each field under its docstring, indented with its section
    assert "  # G: samples drawn per prompt instance (one ``group_id``).\n  samples_per_prompt: 8\n" in text
    assert "  # β of the KL to the reference model (0 = no reference model is kept).\n  kl_coef: 0.25\n" in text
    # the output is itself a config that loads to the same settings
    p = tmp_path / "printed.yaml"
    p.write_text(text)
    again = load_config(p)
    assert again == load_config("grpo_calculator", ["--rl.kl_coef", "0.25", "--run.steps", "3"])
    # the config may also follow the flag; the default job prints its own sections too
    assert main(["train", "--print-config", "grpo_calculator"]) == 0
    assert "kl_coef: 0.0\n" in capsys.readouterr().out
    assert main(["train", "--print-config"]) == 0
    assert "\nworld:\n" in capsys.readouterr().out


def test_train_help_names_the_groups_and_print_config(capsys):
    import dataclasses

    from rlvr.cli import main
    from rlvr.cli.train_cmd import GROUPS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--print-config" in out and "rlvr train [CONFIG] --print-config" in out
    sections = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "algorithm"]
    assert list(GROUPS) == sections  # a new section must be listed in --help
    for name in sections:
        assert f"\n  {name:<9}" in out


def test_field_docs_reads_the_docstring_under_each_field():
    from rlvr.cli.train_cmd import field_docs
    from rlvr.core.config import RLConfig, RolloutConfig

    docs = field_docs(RolloutConfig)
    assert docs["max_new_tokens"] == "Tokens the policy may sample in one turn."
    assert set(docs) - {""} == {f for f in RolloutConfig.__dataclass_fields__}
    assert field_docs(RLConfig)[""].startswith("Knobs of the on-policy algorithms")
