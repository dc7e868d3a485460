"""Typed --params (vltune.settings): what a command accepts is what the workflow passes, a key it
does not give takes the schema's default, and bad params are one line naming the key.

The expected values come from the schema read here with yaml, and from the default config
validated by Snakemake's own validator (defaults set), as the workflow does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vltune import settings as S
from vltune.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())


@pytest.fixture(scope="module")
def config():
    """config/config.yaml validated with defaults, as the workflow's `validate(config, schema)`."""
    from snakemake.utils import validate

    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    validate(cfg, str(ROOT / "workflow/schemas/config.schema.yaml"), set_default=True)
    return cfg


def _schema_node(*keys):
    node = SCHEMA
    for key in keys:
        node = node["properties"][key]
    return node


def test_unknown_param_is_one_line_naming_it():
    with pytest.raises(UserError) as e:
        S.Evaluate.from_params('{"splitt": "val"}', "evaluate-vlbart")
    message = str(e.value)
    assert "'splitt'" in message and "evaluate-vlbart" in message and "\n" not in message


@pytest.mark.parametrize("kind, params, key", [
    (S.Evaluate, {"batch_size": "256"}, "batch_size"),
    (S.EpalmTrain, {"train": {"steps": 1}, "augment": "no"}, "augment"),
    (S.DasFinetune, {"train": {"steps": 1}, "batch_size": True}, "batch_size"),
    (S.VlpetFinetune, {"train": [1, 2]}, "train"),
])
def test_wrong_type_is_one_line_naming_the_key_and_the_type(kind, params, key):
    with pytest.raises(UserError, match=rf"param '{key}' must be ") as e:
        kind.from_params(json.dumps(params), "cmd")
    assert "\n" not in str(e.value)


def test_not_an_object_and_not_json_are_one_line_errors():
    with pytest.raises(UserError, match="--params for cmd must be a JSON object"):
        S.Evaluate.from_params("[1]", "cmd")
    with pytest.raises(UserError, match="--params for cmd is not valid JSON"):
        S.Evaluate.from_params("{nope", "cmd")


def test_missing_key_takes_the_schemas_default():
    ev = SCHEMA["properties"]["evaluate"]["properties"]
    s = S.Evaluate.from_params("{}", "evaluate-vlbart")
    assert (s.split, s.batch_size, s.caption_beams, s.caption_max_len, s.answer_max_len) == (
        ev["split"]["default"], ev["batch_size"]["default"], ev["caption_beams"]["default"],
        ev["caption_max_len"]["default"], ev["answer_max_len"]["default"])
    e = S.EpalmTrain.from_params({"train": {"steps": 3}}, "finetune-epalm")
    ep = _schema_node("epalm")["properties"]
    assert (e.batch_size, e.loss_weight, e.augment, e.normalize, e.dropout) == (
        ep["batch_size"]["default"], ep["loss_weight"]["default"], ep["augment"]["default"],
        ep["normalize"]["default"], ep["dropout"]["default"])
    assert S.VitTrain.from_params({"arch": {}, "train": {"steps": 1}}, "pretrain-vit").patch_loss_weight == \
        _schema_node("backbones", "vit")["properties"]["patch_loss_weight"]["default"]
    assert S.CollectGrams.from_params({}, "collect-grams").batch_size == \
        _schema_node("merging", "grams")["properties"]["batch_size"]["default"]


def test_a_missing_object_takes_the_schemas_default_with_its_nested_defaults():
    """features.tokens defaults to {} and its keys to their own defaults: the missing `visual` is
    the object the validated config holds."""
    tokens = _schema_node("features", "tokens")["properties"]
    s = S.DasFinetune.from_params({"train": {"steps": 1}}, "das-finetune")
    assert s.visual == {k: v["default"] for k, v in tokens.items()}
    latency = _schema_node("das", "latency")["properties"]
    assert S.DasEvaluate.from_params({}, "das-evaluate").latency == {k: v["default"] for k, v in latency.items()}


def test_a_required_key_without_a_default_is_a_one_line_error():
    with pytest.raises(UserError, match=r"finetune-vlbart: --params needs key 'train' \(config key vlpet.train\)"):
        S.VlpetFinetune.from_params("{}", "finetune-vlbart")


def test_without_the_schema_file_a_schema_key_is_required(monkeypatch, tmp_path):
    monkeypatch.setattr(S, "SCHEMA_FILE", tmp_path / "absent.yaml")
    S._schema.cache_clear()
    try:
        with pytest.raises(UserError, match="needs key 'split'"):
            S.Evaluate.from_params("{}", "evaluate-vlbart")
        # a key the command itself defaults is still optional
        assert S.Evaluate.from_params({"split": "test", "batch_size": 8, "caption_beams": 1, "caption_max_len": 9,
                                       "answer_max_len": 3}, "evaluate-vlbart").tasks == ["vqa", "gqa", "nlvr2", "caption"]
    finally:
        S._schema.cache_clear()


# --- the default config's params, built as workflow/rules/common.smk builds them -------------------
def _finetune_params(c, method, steps):
    v = c["vlpet"]
    return {**{k: v[k] for k in ("batch_size", "task_weights", "dropout")}, "train": {**v["train"], "steps": steps},
            "method_config": v["method_configs"].get(method, {}), "visual": c["features"]["tokens"]}


def _evaluate_params(c):
    return {**c["evaluate"], "tasks": sorted(c["vlpet"]["task_weights"])}


def _epalm_train_params(c, method):
    e = c["epalm"]
    return {**{k: e[k] for k in ("batch_size", "loss_weight", "dropout", "augment", "normalize")},
            "train": e["train"], "method_config": e["method_configs"].get(method, {})}


def _das_search_params(c):
    d = c["das"]
    search = dict(d["search"])
    train = {**d["train"], "steps": search.pop("steps")}
    common = {"batch_size": d["batch_size"], "dropout": d["dropout"], "method_config": d["method_config"],
              "visual": c["features"]["tokens"]}
    return {**common, "train": train, "search": search}


def _perception_params(c):
    return {**{k: v for k, v in c["features"].items() if k != "tokens"}, "normalize": c["epalm"]["normalize"]}


def _vlmo_finetune_params(c):
    f = c["merging"]["finetune"]
    return {"train": f["train"], "batch_size": f["batch_size"],
            "evaluate": {"split": c["evaluate"]["split"], "batch_size": c["evaluate"]["batch_size"]}}


def test_default_config_params_round_trip_unchanged(config):
    """Every value the rules pass is accepted as it is and passed on unchanged: the commands
    compute with (and hash) the same values as the JSON the workflow wrote."""
    method = config["vlpet"]["methods"][0]
    cases = [
        (S.VlpetFinetune, _finetune_params(config, method, config["vlpet"]["train"]["steps"])),
        (S.Evaluate, _evaluate_params(config)),
        (S.EpalmTrain, _epalm_train_params(config, config["epalm"]["methods"][0])),
        (S.EpalmEvaluate, {"split": config["evaluate"]["split"], **config["epalm"]["evaluate"]}),
        (S.VlmoFinetune, _vlmo_finetune_params(config)),
        (S.Download, {k: config["download"][k] for k in ("mirror", "retries", "backoff", "timeout")}),
        (S.DasSearch, _das_search_params(config)),
        (S.DasEvaluate, {**{k: config["evaluate"][k] for k in ("split", "batch_size", "caption_beams",
                                                                "caption_max_len", "answer_max_len")},
                         "latency": config["das"]["latency"]}),
        (S.DasFinetune, {k: v for k, v in _das_search_params(config).items() if k != "search"}
         | {"train": config["das"]["train"]}),
        (S.TokenizerTrain, config["tokenizer"]),
        (S.Convert, {"vqa_vocab_size": config["download"]["vqa_vocab_size"]}),
        (S.CollectGrams, {"batch_size": config["merging"]["grams"]["batch_size"]}),
        (S.ImportCheckpoint, {"method_config": config["vlpet"]["method_configs"].get("vlpet-large", {}),
                              "visual": config["features"]["tokens"]}),
        (S.VitTrain, {k: config["backbones"]["vit"][k] for k in ("arch", "train", "batch_size", "patch_loss_weight")}),
        *((S.BackboneTrain, {k: config["backbones"][name][k] for k in ("arch", "train", "batch_size")})
          for name in ("clip", "bart", "t5", "opt")),
        (S.VlmoPretrain, {"arch": config["merging"]["arch"], "train": config["merging"]["pretrain"]["seed"],
                          "batch_size": config["merging"]["pretrain"]["batch_size"],
                          "mlm_prob": config["merging"]["pretrain"]["mlm_prob"]}),
    ]
    for kind, params in cases:
        text = json.dumps(params, sort_keys=True)
        assert kind.from_params(text, kind.__name__).to_dict() == json.loads(text), kind.__name__
    # extract-perception's dtype is the command's own key (the rule never sets it)
    perception = S.Perception.from_params(json.dumps(_perception_params(config)), "extract-perception")
    assert perception.to_dict() == {**_perception_params(config), "dtype": "float32"}


def test_from_config_builds_the_params_the_rules_pass(config):
    method = config["vlpet"]["methods"][0]
    steps = config["vlpet"]["train"]["steps"]
    built = S.VlpetFinetune.from_config(config, train={**config["vlpet"]["train"], "steps": steps},
                                        method_config=config["vlpet"]["method_configs"].get(method, {}))
    assert built.to_dict() == _finetune_params(config, method, steps)
    assert S.EpalmEvaluate.from_config(config).to_dict() == {"split": config["evaluate"]["split"],
                                                            **config["epalm"]["evaluate"]}
    assert S.Perception.from_config(config).to_dict() == {**_perception_params(config), "dtype": "float32"}
    clip = config["backbones"]["clip"]
    assert S.BackboneTrain.from_config(config, section="backbones.clip").to_dict() == \
        {"arch": clip["arch"], "train": clip["train"], "batch_size": clip["batch_size"]}


def test_every_settings_field_names_a_key_the_schema_has():
    """A field's config key is one the schema defines (a renamed key would otherwise be a silent
    'no default')."""
    import dataclasses

    kinds = [k for k in vars(S).values() if isinstance(k, type) and issubclass(k, S.Settings) and k is not S.Settings]
    assert len(kinds) >= 15
    for kind in kinds:
        section = kind.SECTION or "backbones.clip"
        for f in dataclasses.fields(kind):
            path = kind._path(f, section)
            if path is None:
                continue
            node = SCHEMA
            for part in path.split("."):
                node = node.get("properties", {}).get(part)
                assert node is not None, f"{kind.__name__}.{f.name}: {path} is not in the schema"
