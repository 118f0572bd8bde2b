"""The training run's typed configuration: dataclasses, read from YAML/JSON, overridden as ``key.sub=value``.

One :class:`TrainConfig` holds seven sections (``model``, ``task``, ``data``, ``algorithm``, ``optim``,
``temperature``, ``run``). A config file (``.yaml``/``.yml`` through PyYAML when it is installed — it
comes with ``huggingface_hub`` — or ``.json``) gives any subset of the fields; command-line overrides
``optim.lr=1e-4 data.root=a,b`` replace single fields. Every value is checked against its field's type,
and an unknown or misspelled field raises :class:`~autogaze_fast.config.ConfigError` naming the field
and the closest valid one, so a typo fails at start, not hours in.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from autogaze_fast.config import ConfigError, parse_scales

#: ``task.recon_preset`` names (autogaze_fast.train.mae.presets.MAE_PRESETS; kept in sync by a test).
RECON_PRESETS = ("tiny", "videomae-shape")

try:
    import yaml
except ImportError:  # PyYAML is optional: JSON configs and plain overrides work without it
    yaml = None

__all__ = [
    "AlgorithmConfig", "DataConfig", "ModelConfig", "OptimConfig", "RunConfig", "TaskConfig", "TemperatureConfig",
    "TrainConfig", "load_config", "parse_overrides",
]


@dataclass
class ModelConfig:
    """The gaze model to train.

    Attributes:
        checkpoint: a checkpoint directory (``config.json`` + ``model.safetensors``) or hub id to start from
            (e.g. an NTP run's ``checkpoints/step_…`` for GRPO, upstream's ``trainer.gaze_weights``).
        preset: ``"nvidia"``: the NVIDIA shape (scales 32+64+112+224, K = 10) with seeded random weights,
            for pre-training from scratch. Exactly one of ``checkpoint`` / ``preset``.
        preset_seed: seed of the preset's random weights.
        impl: ``"fast"`` (the Triton / torch-twin path) or ``"reference"``.
        gazing_ratio: max fraction of each frame's tokens a rollout gazes (upstream's GRPO example: 0.75);
            None: the checkpoint config's own gazing-ratio strategies, as upstream's trainer.
        task_loss_requirement: stop a rollout frame once the predicted task loss is at most this (None: the
            config's strategy when ``gazing_ratio`` is None too, else off).
    """

    checkpoint: str | None = None
    preset: str | None = None
    preset_seed: int = 0
    impl: str = "fast"
    gazing_ratio: float | None = 0.75
    task_loss_requirement: float | None = None


@dataclass
class TaskConfig:
    """The gazed multi-scale MAE reconstruction task (frozen; upstream trains with ``train_task=False``).

    Attributes:
        recon_model: a ``ViTMAEForPreTraining`` directory or hub id (its ``config.json``, preprocessing
            and, without ``task_weights``, its weights). GRPO needs it or ``recon_preset``; validation
            uses either when given.
        recon_preset: ``"tiny"`` (2 layers, 32 wide: smoke runs on a laptop) or ``"videomae-shape"``
            (``facebook/vit-mae-large``'s shape): an MAE with seeded random weights, the MAE's sibling of
            ``model.preset``. At most one of ``recon_model`` / ``recon_preset``.
        recon_preset_seed: seed of the preset's random weights.
        task_weights: upstream's ``videomae.pt`` (every MAE key; the directory then only gives the config).
        scales: the MAE's scales, ``"32+64+112+224"``; the clip side is the largest.
        recon_sample_rate: fraction of the frames reconstructed per clip (upstream: 0.125).
        loss_type, loss_weights: ``"l1"`` / ``"l1+siglip2"`` and ``"1"`` / ``"1+0.3"``.
        siglip2_model: the SigLIP checkpoint of the ``siglip2`` feature loss.
        init_new_embeddings: initialise the scale/time tables a plain ``vit-mae`` checkpoint lacks.
    """

    recon_model: str | None = None
    recon_preset: str | None = None
    recon_preset_seed: int = 0
    task_weights: str | None = None
    scales: str = "32+64+112+224"
    recon_sample_rate: float = 0.125
    loss_type: str = "l1"
    loss_weights: str = "1"
    siglip2_model: str | None = None
    init_new_embeddings: bool = False


@dataclass
class DataConfig:
    """The video folders (upstream's ``VideoFolder``).

    Attributes:
        root: comma-separated dataset folders, each with ``train/`` and ``val/`` sub-folders of videos.
        labels: ground-truth gazing labels JSON (comma-separated paths or globs; upstream's
            ``gazing_labels.json``); required by NTP. Videos without a label are left out, as upstream.
        val_labels: the same for the validation split (NTP validation loss); optional.
        clip_len: frames per clip (upstream: 16).
        frame_sample_rate: take every n-th frame.
        random_sample_frame: a random clip start per sample (deterministic per seed, epoch and video).
        video_ext: suffix of the video files.
        center_crop: centre-crop the gaze model's frames to a square after the shortest-edge resize (a
            no-op for upstream's square 448 × 448 data; lets clips of other aspects share a batch).
        check_videos: open every video's header at start; unopenable ones are skipped with a warning.
        num_workers: DataLoader decoding processes per rank.
    """

    root: str = ""
    labels: str | None = None
    val_labels: str | None = None
    clip_len: int = 16
    frame_sample_rate: int = 1
    random_sample_frame: bool = False
    video_ext: str = ".mp4"
    center_crop: bool = True
    check_videos: bool = True
    num_workers: int = 0


@dataclass
class AlgorithmConfig:
    """``name``: ``"ntp"`` (next-token prediction on the labels) or ``"grpo"`` (RL on the MAE's reward).

    Attributes:
        group_size: GRPO rollouts per clip (upstream's example: 12).
        discount_factor: GRPO's per-step discount in [0, 1] (upstream's example: 0.995).
        optimize_task_loss_prediction: also train the task-loss head.
    """

    name: str = "grpo"
    group_size: int = 4
    discount_factor: float = 1.0
    optimize_task_loss_prediction: bool = False


@dataclass
class OptimConfig:
    """Adam, learning-rate schedule, batch sizes and clipping.

    Attributes:
        lr, betas, eps, weight_decay: ``torch.optim.Adam`` (``adamw=True``: ``AdamW``).
        schedule: ``"cosine"`` (linear warm-up, then cosine to ``min_lr``), ``"linear"`` (warm-up, then
            linear to ``min_lr``) or ``"constant"`` (warm-up, then ``lr``).
        warmup_steps: optimizer steps of linear warm-up from 0.
        global_batch: clips per optimizer step over all ranks; must be a multiple of
            ``world_size · micro_batch``, the rest is gradient accumulation.
        micro_batch: clips per forward/backward on one rank.
        grad_clip: max global gradient norm (None or 0: no clipping).
        steps: optimizer steps of the run.
    """

    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    adamw: bool = False
    schedule: str = "cosine"
    warmup_steps: int = 0
    min_lr: float = 0.0
    global_batch: int = 64
    micro_batch: int = 2
    grad_clip: float | None = 1.0
    steps: int = 1000


@dataclass
class TemperatureConfig:
    """Rollout temperature, annealed as upstream: ``start · (end / start) ** (step / steps)``."""

    start: float = 3.0
    end: float = 0.3


@dataclass
class RunConfig:
    """Where and how the run goes.

    Attributes:
        out_dir: checkpoints (``checkpoints/step_XXXXXXXX``), ``metrics.jsonl``, TensorBoard events.
        resume: ``"auto"`` (the newest checkpoint in ``out_dir`` if any), ``"never"``, or a checkpoint dir.
        save_every: checkpoint every N optimizer steps (and at the end); 0: only at the end.
        keep_last: checkpoints kept (older ones are deleted once a newer one is complete).
        val_every: validate every N optimizer steps (0: never) on the ``val`` split, each rank its share;
            ``val_batches``: at most this many micro-batches per rank (0: the whole split).
        seed: seeds weights of presets, data order, rollouts and frame choices.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``.
        dtype: ``"bf16"`` (autocast on CUDA, as upstream; float32 on CPU) or ``"fp32"``.
        log_every: write a metrics line every N steps.
        tensorboard: also write TensorBoard events when ``tensorboard`` is installed.
        progress: tqdm bar on rank 0.
    """

    out_dir: str = "runs/autogaze"
    resume: str = "auto"
    save_every: int = 500
    keep_last: int = 2
    val_every: int = 1000
    val_batches: int = 0
    seed: int = 666
    device: str = "auto"
    dtype: str = "bf16"
    log_every: int = 1
    tensorboard: bool = True
    progress: bool = True


@dataclass
class TrainConfig:
    """The whole run (see each section's class)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    temperature: TemperatureConfig = field(default_factory=TemperatureConfig)
    run: RunConfig = field(default_factory=RunConfig)

    # ------------------------------------------------------------------ checks
    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` naming the first inconsistent field; returns ``self``."""
        m, t, d, a, o, r = self.model, self.task, self.data, self.algorithm, self.optim, self.run
        if (m.checkpoint is None) == (m.preset is None):
            raise ConfigError("give exactly one of model.checkpoint (a checkpoint dir or hub id) and model.preset "
                              f"('nvidia': random weights of the NVIDIA shape); got checkpoint={m.checkpoint!r}, "
                              f"preset={m.preset!r}")
        _choice("model.preset", m.preset, (None, "nvidia"))
        _choice("model.impl", m.impl, ("fast", "reference"))
        _choice("algorithm.name", a.name, ("ntp", "grpo"))
        _choice("optim.schedule", o.schedule, ("cosine", "linear", "constant"))
        _choice("run.device", r.device, ("auto", "cpu", "cuda"))
        _choice("run.dtype", r.dtype, ("bf16", "fp32"))
        if m.gazing_ratio is not None and not 0 < m.gazing_ratio <= 1:
            raise ConfigError(f"model.gazing_ratio must be in (0, 1], got {m.gazing_ratio}")
        if not d.root.strip():
            raise ConfigError("data.root is empty: give the dataset folder(s), comma-separated, each with train/ "
                              "and val/ sub-folders of videos")
        if a.name == "ntp" and not d.labels:
            raise ConfigError("algorithm.name=ntp needs data.labels: the ground-truth gazing labels JSON "
                              "(upstream's gazing_labels.json)")
        _choice("task.recon_preset", t.recon_preset, (None, *RECON_PRESETS))
        if t.recon_model and t.recon_preset:
            raise ConfigError(f"give at most one of task.recon_model (an MAE checkpoint) and task.recon_preset (a "
                              f"random MAE); got recon_model={t.recon_model!r}, recon_preset={t.recon_preset!r}")
        if t.recon_preset and t.task_weights:
            raise ConfigError("task.task_weights needs task.recon_model (the MAE's config.json); task.recon_preset "
                              "builds a random MAE and loads no weights")
        if a.name == "grpo" and not (t.recon_model or t.recon_preset):
            raise ConfigError("algorithm.name=grpo needs task.recon_model: the MAE (a ViTMAEForPreTraining "
                              "directory or hub id) whose reconstruction loss is the reward, or task.recon_preset="
                              f"{'|'.join(RECON_PRESETS)} for a seeded random one (smoke runs)")
        for name, value in (("data.clip_len", d.clip_len), ("data.frame_sample_rate", d.frame_sample_rate),
                            ("algorithm.group_size", a.group_size), ("optim.global_batch", o.global_batch),
                            ("optim.micro_batch", o.micro_batch), ("optim.steps", o.steps),
                            ("run.keep_last", r.keep_last), ("run.log_every", r.log_every)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        for name, value in (("optim.warmup_steps", o.warmup_steps), ("run.save_every", r.save_every),
                            ("run.val_every", r.val_every), ("run.val_batches", r.val_batches),
                            ("data.num_workers", d.num_workers), ("optim.weight_decay", o.weight_decay),
                            ("optim.min_lr", o.min_lr)):
            if value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        if o.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {o.lr}")
        if not all(0 <= b < 1 for b in o.betas) or len(o.betas) != 2:
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {o.betas}")
        if not 0 <= a.discount_factor <= 1:
            raise ConfigError(f"algorithm.discount_factor must be in [0, 1], got {a.discount_factor}")
        if self.temperature.start <= 0 or self.temperature.end <= 0:
            raise ConfigError(f"temperature.start and temperature.end must be > 0, got {self.temperature.start}, "
                              f"{self.temperature.end}")
        if not 0 < t.recon_sample_rate <= 1:
            raise ConfigError(f"task.recon_sample_rate must be in (0, 1], got {t.recon_sample_rate}")
        parse_scales(t.scales)
        return self

    def missing_required(self) -> dict[str, str]:
        """The required fields left unset: dotted name → what is needed (``{}`` when none is missing).

        ``model.checkpoint`` / ``model.preset`` (one of them), ``data.root``, ``data.labels`` for NTP,
        ``task.recon_model`` / ``task.recon_preset`` (one of them) for GRPO.
        """
        m, t, d, a = self.model, self.task, self.data, self.algorithm
        missing: dict[str, str] = {}
        if m.checkpoint is None and m.preset is None:
            missing["model.checkpoint"] = missing["model.preset"] = "one of model.checkpoint, model.preset"
        if not d.root.strip():
            missing["data.root"] = "dataset folder(s), comma-separated"
        if a.name == "ntp" and not d.labels:
            missing["data.labels"] = "by algorithm.name=ntp"
        if a.name == "grpo" and not (t.recon_model or t.recon_preset):
            missing["task.recon_model"] = missing["task.recon_preset"] = \
                "by algorithm.name=grpo, one of task.recon_model, task.recon_preset"
        return missing

    def to_display_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` with every field of :meth:`missing_required` shown as ``"<required: …>"``
        (what ``autogaze-fast train --print-config`` prints)."""
        values = self.to_dict()
        for name, need in self.missing_required().items():
            section, key = name.split(".")
            values[section][key] = f"<required: {need}>"
        return values

    def batch_plan(self, world_size: int) -> tuple[int, int]:
        """``(micro-batches per rank per step, clips per rank per step)``; a ConfigError if the global
        batch does not split evenly over ``world_size`` ranks of ``micro_batch`` clips."""
        o = self.optim
        if o.global_batch % (world_size * o.micro_batch):
            raise ConfigError(f"optim.global_batch={o.global_batch} must be a multiple of world_size ({world_size}) x "
                              f"optim.micro_batch ({o.micro_batch}) = {world_size * o.micro_batch}, so every rank "
                              "accumulates the same number of equal micro-batches")
        per_rank = o.global_batch // world_size
        return per_rank // o.micro_batch, per_rank

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-ready; tuples become lists) that :func:`config_from_dict` reads back."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        shown = [a for a in allowed if a is not None]
        raise ConfigError(f"{name} must be one of {shown}, got {value!r}")


# ---------------------------------------------------------------------- dict / file / override parsing
def _unknown(name: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{where}{close[0]}'?" if close else ""
    return ConfigError(f"unknown config field '{where}{name}'{hint} (valid fields of "
                       f"{where.rstrip('.') or 'the config'}: {', '.join(valid)})")


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """``value`` checked/converted to the annotation ``hint`` (str, int, float, bool, Optional, tuple)."""
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:  # Optional[X] and X | None
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        return _coerce(value, args[0], name)
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{name} must be a list like '0.9,0.999', got {value!r}")
        args = typing.get_args(hint)
        if len(items) != len(args):
            raise ConfigError(f"{name} must hold {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, name) for v, a in zip(items, args))
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        try:
            return int(value) if not isinstance(value, str) else int(value.strip())
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, (dict, list, tuple)):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{name}: unsupported field type {hint}")  # pragma: no cover


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{where.rstrip('.')}' must be a mapping of fields, got {values!r}")
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise _unknown(str(key), names, where)
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value or {}, f"{where}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{where}{key}")
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a nested dict (unknown keys raise); not yet validated."""
    return _build(TrainConfig, values or {}, "")


def _parse_scalar(text: str) -> Any:
    """An override's value: YAML/JSON scalar syntax when it parses (``1e-4``, ``true``, ``null``), else the string."""
    if yaml is None:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    try:
        return yaml.safe_load(text)
    except Exception:
        return text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=1e-4", "run.out_dir=x"]`` → nested dict; a malformed item raises ConfigError."""
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
            raise ConfigError(f"override {item!r} must look like section.field=value (e.g. optim.lr=1e-4)")
        parts = key.strip().split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part}")
        node[parts[-1]] = _parse_scalar(text)
    return nested


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML (``.yaml``/``.yml``, needs PyYAML) or JSON config file as a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no config file at {path}")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        if yaml is None:
            raise ConfigError(f"{path} is YAML but PyYAML is not installed: pip install pyyaml, or write the "
                              "config as JSON")
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); YAML files need a .yaml suffix") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (model, task, data, ...), got {type(values).__name__}")
    return values


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                validate: bool = True) -> TrainConfig:
    """Read ``path`` (optional), apply ``key.sub=value`` ``overrides``, check everything
    (``validate=False``: only the fields' names and types, e.g. to print an unfinished config).

    Raises:
        ConfigError: missing/unparsable file, unknown field (with the closest valid name), wrong type,
            inconsistent values.
    """
    values = read_config_file(path) if path is not None else {}
    values = _merge(values, parse_overrides(list(overrides or [])))
    cfg = config_from_dict(values)
    return cfg.validate() if validate else cfg
