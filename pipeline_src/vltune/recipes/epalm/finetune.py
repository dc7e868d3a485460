"""eP-ALM training: one task per run (VQA, GQA or captioning, as the reference's configs), only the
connection (and prompt) train; perception from the feature store or from the encoder every step.

Text formats (eP-ALM, arXiv 2303.11403, OPT tokenizer: BOS = EOS = ``</s>``):

* VQA / GQA: ``</s>`` question ``?</a>`` answer ``</s>``. The question keeps its own "?" and gets the
  reference's extra one (its questions already end in "?"); the VQA answer is drawn ∝ its soft
  score each time the question is seen, as VL-Adapter's loader.
* captioning: ``</s>`` caption ``</s>``, one of the image's references drawn uniformly.

Loss (``OPTForCausalLM`` in the reference, item 5): logits over ``[visual][prompt][text]``, shifted by
one; labels are the text ids with pads ignored, preceded by ignored prefix positions, so the last
prefix position predicts the BOS and every text token after it is predicted (question included);
token cross-entropy summed per example, averaged over the batch, times ``loss_weight`` (0.1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch

from ...backbones.opt import ANSWER_TOKEN, load_opt
from ...backbones.vit import load_vit
from ...data.answers import soft_scores
from ...data.images import decode_uint8, normalize
from ...data.tables import read_table, table_path
from ...errors import UserError
from ...features.perception import KEY, perception_preprocessing
from ...features.store import FeatureStore
from ...models.epalm import EPALM
from ...pet import count_parameters, get_method, is_pet_dir, load_pet, save_pet, PET_METHODS
from ...pet.base import apply_pet
from ...pet.config import resolve_config
from ...train.loop import TrainConfig, train
from ...utils.io import read_json, write_json
from ...utils.tensors import pad_sequences

log = logging.getLogger(__name__)

TASKS = ("vqa", "gqa", "caption")
CHECKPOINT_JSON = "epalm.json"
PET_SUBDIR = "adapter"


@dataclass
class EpalmExamples:
    """One task and split: prompt ids (with BOS), target choices (ids ending in EOS, weight), the
    image of each example, what the metric needs (``refs``) and example ids."""

    task: str
    prompts: list[list[int]]
    targets: list[list[tuple[list[int], float]]]
    images: list[str]
    refs: list = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompts)


def load_examples(data_dir: str | Path, task: str, split: str, tok, max_len: int = 48) -> EpalmExamples:
    """The ``split`` examples of ``task`` in eP-ALM's text format (module docstring)."""
    if task not in TASKS:
        raise UserError(f"eP-ALM task must be one of {', '.join(TASKS)}, got {task!r}")
    kind = "captions" if task == "caption" else task
    t = read_table(table_path(data_dir, kind), kind)
    t = t.filter(pc.equal(t["split"], split)).to_pydict()
    if not t["image_id"]:
        raise UserError(f"{table_path(data_dir, kind)}: no {split!r} rows for eP-ALM {task}")
    eos = tok.eos_token_id

    def answers(texts: list[str]) -> dict[str, list[int]]:
        vocab = sorted(set(texts))
        ids = tok(vocab, add_special_tokens=False, truncation=True, max_length=max_len)["input_ids"]
        return {a: i + [eos] for a, i in zip(vocab, ids)}

    if task == "caption":
        flat = [c for caps in t["captions"] for c in caps]
        ids = dict(zip(flat, tok(flat, add_special_tokens=False, truncation=True, max_length=max_len - 2)["input_ids"]))
        targets = [[(ids[c] + [eos], 1.0) for c in caps] for caps in t["captions"]]
        prompts = [[tok.bos_token_id]] * len(targets)
        return EpalmExamples(task, prompts, targets, t["image_id"], t["captions"], t["image_id"])
    questions = [f"{q}?{ANSWER_TOKEN}" for q in t["question"]]  # the reference's question + "?" + "</a>"
    prompts = tok(questions, truncation=True, max_length=max_len)["input_ids"]
    if task == "vqa":
        scored = [sorted(soft_scores(a).items()) for a in t["answers"]]
        ids = answers([a for choices in scored for a, _ in choices])
        targets = [[(ids[a], s) for a, s in choices if s > 0] for choices in scored]
        return EpalmExamples(task, prompts, targets, t["image_id"], t["answers"], t["question_id"])
    ids = answers(t["answer"])
    return EpalmExamples(task, prompts, [[(ids[a], 1.0)] for a in t["answer"]], t["image_id"], t["answer"],
                         t["question_id"])


class Perception:
    """Where a batch's perception comes from: the cached [CLS] store, or the images (the encoder
    then runs inside the model, on augmented images when ``augment``).

    Args:
        features_dir: feature store written by ``extract-perception`` (cached), or None.
        data_dir, preprocessing: the images table and the encoder's input recipe (recomputed).
    """

    def __init__(self, features_dir: str | Path | None = None, data_dir: str | Path | None = None,
                 preprocessing: dict | None = None, augment: bool = False):
        self.cached = features_dir is not None
        self.augment = augment
        if self.cached:
            if augment:
                raise UserError("eP-ALM: augmented images need the encoder every step; cached perception "
                                "cannot be used with augment")
            store = FeatureStore(features_dir)
            if KEY not in store.keys:
                raise UserError(f"{features_dir}: feature store has no {KEY!r} (run extract-perception); "
                                f"it has {sorted(store.keys)}")
            ids, self.bank = store.all(KEY)
            self.bank = self.bank.float()
            self.preprocessing = store.manifest["preprocessing"]
            self.encoder = store.manifest["encoder"]
        else:
            images = read_table(table_path(data_dir, "images"), "images")
            ids = images["image_id"].to_pylist()
            self.pixels = decode_uint8(images["image"].to_pylist(), preprocessing["resize"],
                                       preprocessing.get("interpolation", "bicubic"))
            self.preprocessing = preprocessing
            self._augment = (_augmentation(preprocessing["resize"], preprocessing.get("interpolation", "bicubic"))
                             if augment else None)
        self.index = {iid: i for i, iid in enumerate(ids)}

    def batch(self, image_ids: list[str]) -> dict:
        try:
            rows = torch.tensor([self.index[i] for i in image_ids])
        except KeyError as e:
            raise UserError(f"image {e.args[0]!r} has no perception (feature store or images table)") from None
        if self.cached:
            return {"perception": self.bank[rows]}
        pixels = self.pixels[rows]
        if self._augment is not None:  # per image: torchvision draws one set of parameters per call
            pixels = torch.stack([self._augment(p) for p in pixels])
        return {"pixel_values": normalize(pixels, self.preprocessing["mean"], self.preprocessing["std"])}


def _augmentation(size: int, interpolation: str = "bicubic"):
    """The reference's train transform on uint8 images: RandomResizedCrop(scale 0.5–1, with the
    encoder's interpolation: bicubic, the reference's, for the augreg ViTs), horizontal flip,
    RandAugment(2, 7) (``dataset/vqa.py``). The flip swaps left and right, which the world's
    spatial questions ask about, as the reference's VQA data does."""
    from torchvision.transforms import InterpolationMode, v2

    return v2.Compose([v2.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=InterpolationMode(interpolation)),
                       v2.RandomHorizontalFlip(), v2.RandAugment(num_ops=2, magnitude=7)])


def make_batch(ex: EpalmExamples, idx, perception: Perception, pad_id: int, rng: np.random.Generator) -> dict:
    """Training batch of examples ``idx``: one target drawn per example (∝ weight), right padding."""
    seqs = []
    for i in idx:
        choices = ex.targets[i]
        w = np.array([c[1] for c in choices], dtype=float)
        seqs.append(ex.prompts[i] + choices[rng.choice(len(choices), p=w / w.sum())][0])
    input_ids = pad_sequences(seqs, pad_id)
    mask = pad_sequences([[1] * len(s) for s in seqs], 0)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": input_ids.masked_fill(mask == 0, -100),
            **perception.batch([ex.images[i] for i in idx])}


def epalm_loss(model, batch: dict, loss_weight: float = 0.1) -> torch.Tensor:
    """Per-example summed token cross-entropy over the text, batch mean, × ``loss_weight``."""
    out = model(batch["input_ids"], batch["attention_mask"], batch.get("perception"), batch.get("pixel_values"))
    n_prefix = out.logits.shape[1] - batch["input_ids"].shape[1]
    labels = torch.nn.functional.pad(batch["labels"], (n_prefix, 0), value=-100)
    logits = out.logits[:, :-1].float()
    tok = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none")
    return loss_weight * tok.sum(1).mean()


def _meta_encoder(vit_dir: str | Path):
    """The headless timm model of ``vit_dir`` built on the meta device (shapes only, nothing loaded)."""
    import timm

    vit_dir = Path(vit_dir)
    if not (vit_dir / "config.json").is_file():
        raise UserError(f"{vit_dir}: no config.json (expected a timm save_for_hf folder)")
    try:
        with torch.device("meta"):
            return timm.create_model(f"local-dir:{vit_dir}", pretrained=False, num_classes=0)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{vit_dir}: timm cannot build a model from its config.json ({e!r})") from None


def encoder_parameters(vit_dir: str | Path) -> int:
    """Parameters of the (headless) encoder, counted on the meta device (nothing loaded)."""
    return sum(p.numel() for p in _meta_encoder(vit_dir).parameters())


def encoder_shape(vit_dir: str | Path) -> tuple[int, int]:
    """(width, depth) of the timm ViT in ``vit_dir``, read from the model timm builds from the
    folder (on the meta device): a pipeline-pretrained ViT and a published one alike."""
    vit = _meta_encoder(vit_dir)
    blocks = getattr(vit, "blocks", None)
    width = getattr(vit, "embed_dim", None) or getattr(vit, "num_features", None)
    if blocks is None or not width or getattr(vit, "cls_token", None) is None:
        raise UserError(f"{vit_dir}: a {type(vit).__name__} is not a timm ViT with a [CLS] token and "
                        "transformer blocks (eP-ALM reads the [CLS] after every block)")
    return int(width), len(blocks)


def build_epalm(lm_dir: str | Path, vit_dir: str | Path, cached: bool, dropout: float | None = None):
    """EPALM on the OPT in ``lm_dir``; the ViT in ``vit_dir`` is loaded only when perception is
    recomputed (its width and depth are read from the model built on the meta device otherwise,
    :func:`encoder_shape`). Returns (model, tokenizer)."""
    lm, tok = load_opt(lm_dir, dropout)
    if cached:
        return EPALM(lm, None, *encoder_shape(vit_dir)), tok
    return EPALM(lm, load_vit(vit_dir)), tok


def _check_method(method: str) -> None:
    get_method(method)
    if PET_METHODS.meta(method)["model_kind"] != "epalm":
        raise UserError(f"--method {method!r} is not an eP-ALM method (epalm-linear, epalm-prompt)")


def finetune_epalm(data_dir, lm_dir, vit_dir, out_dir, task: str, method: str, train_cfg: TrainConfig,
                   batch_size: int, features_dir=None, augment: bool = False, normalize_images: str = "clip",
                   loss_weight: float = 0.1, dropout: float | None = None, method_config: dict | None = None,
                   resume_dir=None) -> dict:
    """Train eP-ALM on one ``task``; perception cached when ``features_dir`` is given, else
    recomputed (with ``augment``). Writes the checkpoint (connection/prompt + JSON) into ``out_dir``."""
    _check_method(method)
    cached = features_dir is not None
    torch.manual_seed(train_cfg.seed)  # the connection's and prompt's init depend on the run seed only
    model, tok = build_epalm(lm_dir, vit_dir, cached, dropout)
    try:
        pet_config = resolve_config({**(method_config or {}), "method": method})
        error = pet_config.window_error(model.config.num_hidden_layers, f"the OPT in {lm_dir}")
        if error:  # before any training, named as the config key to change
            raise UserError(error)
        apply_pet(model, pet_config)
    except ValueError as e:
        raise UserError(f"finetune-epalm: {e}") from None
    preprocessing = None if cached else perception_preprocessing(model.encoder, normalize_images)
    perception = Perception(features_dir, data_dir, preprocessing, augment)
    if cached and perception.encoder != Path(vit_dir).name:
        raise UserError(f"{features_dir}: perception was extracted with encoder {perception.encoder!r}, "
                        f"but this run's encoder is {Path(vit_dir).name!r}")
    ex = load_examples(data_dir, task, "train", tok)
    log.info("eP-ALM %s: %d training examples, perception %s", task, len(ex), "cached" if cached else "recomputed")

    def batch_fn(step: int) -> dict:
        rng = np.random.default_rng([train_cfg.seed, step])
        idx = rng.choice(len(ex), size=min(batch_size, len(ex)), replace=False)
        return make_batch(ex, idx, perception, tok.pad_token_id, rng)

    def loss_fn(m, b):
        return epalm_loss(m, b, loss_weight)

    result = train(model, batch_fn, loss_fn, train_cfg, resume_dir=resume_dir, desc=f"finetune_epalm[{method}/{task}]")
    params = epalm_parameter_counts(model, vit_dir)
    meta = {"task": task, "method": method, "seed": train_cfg.seed, "lm": str(lm_dir), "encoder": str(vit_dir),
            "perception": "cached" if cached else "recomputed", "augment": augment,
            "preprocessing": perception.preprocessing, "loss_weight": loss_weight, "dropout": dropout, **params}
    save_epalm(model, out_dir, meta)
    write_json(Path(out_dir) / "train_log.json", {**result, **params})
    return {**result, **params}


def epalm_parameter_counts(model: EPALM, vit_dir: str | Path) -> dict:
    """Trainable / total parameters, the encoder counted even when perception is cached."""
    counts = count_parameters(model)
    if model.encoder is None:
        total = counts["total_params"] + encoder_parameters(vit_dir)
        counts.update(total_params=total, trainable_pct=100.0 * counts["trainable_params"] / total)
    return counts


def save_epalm(model: EPALM, out_dir: str | Path, meta: dict) -> None:
    """Only the connection and prompt (``adapter/``, vltune.pet format) + ``epalm.json``."""
    out_dir = Path(out_dir)
    save_pet(model, out_dir / PET_SUBDIR)
    write_json(out_dir / CHECKPOINT_JSON, meta)


def load_epalm(ckpt_dir: str | Path, lm_dir: str | Path | None = None, vit_dir: str | Path | None = None,
               cached: bool = True):
    """Rebuild a checkpoint of :func:`finetune_epalm` on its backbones (or the ones given); returns
    (model in eval mode, tokenizer, meta)."""
    ckpt_dir = Path(ckpt_dir)
    meta = read_json(ckpt_dir / CHECKPOINT_JSON)
    if not is_pet_dir(ckpt_dir / PET_SUBDIR):
        raise FileNotFoundError(f"{ckpt_dir}: no {PET_SUBDIR}/ with eP-ALM's connection (not an eP-ALM checkpoint)")
    model, tok = build_epalm(lm_dir or meta["lm"], vit_dir or meta["encoder"], cached, meta.get("dropout"))
    load_pet(model, ckpt_dir / PET_SUBDIR)
    return model.eval(), tok, meta
