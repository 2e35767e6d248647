"""Config dataclasses and a strict YAML/TOML loader.

Every spec is a dataclass handed to constructors (STYLE.md #1). `load_config(path, Cls)` reads a file
once, checks every key and type, and raises ConfigError naming the file, the key path and what was expected.
This module imports only the standard library and PyYAML: the device uses it too.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge_gmm.errors import ConfigError

SENSOR_KINDS = ("imu", "timeseries", "audio", "camera")
TASK_TYPES = ("classification", "regression", "anomaly")
# Sample rates outside this span are corrupt descriptors or manifests, not sensors: 1e-6 Hz makes a stale
# timeout of 58 days, 1e9 Hz a window of 4 GB per channel. A slow gauge (1/min) and ultrasound (1 MHz) fit.
MIN_RATE_HZ = 1e-3
MAX_RATE_HZ = 1e6


@dataclass
class SensorSpec:
    """One modality. Samples on disk and in windows are float32; `sample_shape` is one sample's shape."""

    name: str
    kind: Literal["imu", "timeseries", "audio", "camera"]
    rate: float  # Hz (frames per second for a camera)
    channels: int = 1  # imu / timeseries channels; audio is mono (1); camera is 3 (RGB)
    units: list[str] = field(default_factory=list)  # one per channel, may be empty
    height: int = 0  # camera only
    width: int = 0  # camera only
    timeout_s: float = 0.0  # stale after this long without samples; 0 = derived (max(0.5 s, 5 samples))

    def __post_init__(self):
        if self.kind not in SENSOR_KINDS:
            raise ConfigError(f"sensor {self.name!r}: kind must be one of {SENSOR_KINDS}, got {self.kind!r}")
        if not MIN_RATE_HZ <= self.rate <= MAX_RATE_HZ:  # also refuses NaN and inf
            raise ConfigError(f"sensor {self.name!r}: rate must be within [{MIN_RATE_HZ:g}, {MAX_RATE_HZ:g}] Hz, got {self.rate}")
        if not 0 <= self.timeout_s < math.inf:
            raise ConfigError(f"sensor {self.name!r}: timeout_s must be >= 0 and finite (0 = derived), got {self.timeout_s}")
        if self.kind == "camera" and (self.height <= 0 or self.width <= 0):
            raise ConfigError(f"sensor {self.name!r}: a camera needs height and width")
        if self.kind == "audio" and self.channels != 1:
            raise ConfigError(f"sensor {self.name!r}: audio must be mono (channels: 1)")
        if self.kind == "camera":
            self.channels = 3

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample as stored in a stream: imu/timeseries (C,), audio (), camera (H, W, 3)."""
        if self.kind == "audio":
            return ()
        if self.kind == "camera":
            return (self.height, self.width, 3)
        return (self.channels,)

    @property
    def stale_after_s(self) -> float:
        return self.timeout_s if self.timeout_s > 0 else max(0.5, 5.0 / self.rate)


@dataclass
class WindowSpec:
    """Windows of `length_s` every `hop_s`. Each modality contributes a fixed sample count (see `samples`)."""

    length_s: float = 1.0
    hop_s: float = 0.5
    min_coverage: float = 0.9  # fraction of expected samples a modality needs in a window, else mask = 0
    label_rule: Literal["center", "majority"] = "majority"

    def __post_init__(self):
        if not (0 < self.length_s < math.inf and 0 < self.hop_s < math.inf):
            raise ConfigError(f"window: length_s and hop_s must be > 0 and finite, got {self.length_s} and {self.hop_s}")
        if not 0 < self.min_coverage <= 1:
            raise ConfigError("window: min_coverage must be in (0, 1]")

    def samples(self, sensor: SensorSpec) -> int:
        """Samples a modality contributes to one window: round(length * rate); a camera gives its latest frame."""
        if sensor.kind == "camera":
            return 1
        return max(1, int(round(self.length_s * sensor.rate)))


@dataclass
class TaskSpec:
    name: str
    type: Literal["classification", "regression", "anomaly"] = "classification"
    labels: list[str] = field(default_factory=list)  # classification
    targets: list[str] = field(default_factory=list)  # regression outputs

    def __post_init__(self):
        if self.type not in TASK_TYPES:
            raise ConfigError(f"task {self.name!r}: type must be one of {TASK_TYPES}")
        if self.type == "classification" and len(self.labels) < 2:
            raise ConfigError(f"task {self.name!r}: a classification task needs at least 2 labels")


@dataclass
class ModelSpec:
    """Which preset to build and what to override. Preset names live in edge_gmm.model.presets."""

    preset: str = "teacher-base"
    student: str = "student-stream"
    d_model: int = 0  # 0 = the preset's
    depth: int = 0
    heads: int = 0
    patch_s: float = 0.0  # patch length in seconds for imu/timeseries/audio tokens; 0 = the preset's
    resampler_queries: int = 0  # >0: K learned queries per modality cap the token budget
    dropout: float = 0.1
    modality_dropout: float = 0.25  # probability per modality per sample during training

    def __post_init__(self):
        check_ranges(self, "model", _MODEL_RANGES)


@dataclass
class TrainSpec:
    """How to train. Zero means "derive it from the dataset" (edge_gmm.train.budget.plan): the defaults must
    fit a 40-example set and a 2,000-window set alike, so length, batch and patience follow the data."""

    epochs: int = 0  # teacher; 0 = from the step budget below; >0 overrides it
    student_epochs: int = 0  # 0 = from the step budget (or `epochs` when that is set)
    batch_size: int = 0  # 0 = n_train // 8 clamped to [8, 64]: small sets still get several steps an epoch
    lr: float = 2e-3  # at batch 64; scaled by batch / 64 (not below a quarter) for other batch sizes
    weight_decay: float = 0.05  # not on norms, embeddings or biases
    warmup_frac: float = 0.1
    # step budget floor: a small set trains for at least this many optimizer steps. 300 left the streamable model
    # (token mixer starting as identity) still at loss ~0.45 on GunPoint; 1,000: 97.0 % vs 71.6 % over 5 seeds
    min_steps: int = 1000
    budget_epochs: int = 40  # ... and for at least this many epochs (sklearn digits: 90 % after 17, 97 % after 60)
    perfect_epochs: int = 3  # stop once the validation accuracy has been 100 % this many epochs in a row
    max_epochs: int = 400  # ceiling of the derived length
    patience: int = 0  # early stopping: epochs with neither a better val accuracy nor a lower val loss (by 1 % and 0.01); 0 = a quarter of the epochs (>= 5)
    min_val_windows: int = 30  # fewer validation windows: no early stopping, the last epoch is kept
    time_budget_s: float = 0.0  # >0: cap teacher + student training time (the plan shrinks to fit)
    seed: int = 0
    distill_temperature: float = 2.0
    distill_alpha: float = 0.7  # weight of the soft (teacher) loss
    feature_beta: float = 0.0  # weight of the feature (embedding) distillation loss; 0: with the online teacher it cost
    # GunPoint 19 points (74 % vs 93 %, same seed), see docs/model.md
    # the teacher answers each augmented batch below this many training windows (where views matter most and
    # its forward pass is cheap); above, its answers on the clean windows, computed once. 0 = never online
    distill_online_below: int = 1000
    class_weighting: bool = True
    augment: bool = True
    modality_mix: float = 0.5  # per modality, chance to take it from another window of the same class
    label_smoothing: float = 0.1
    aux_weight: float = 0.0  # >0: per-modality auxiliary heads (train only) against one modality starving another
    threads: int = 0  # 0 = torch default

    def __post_init__(self):
        check_ranges(self, "train", _TRAIN_RANGES)


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric key: lo <= v (lo < v when lo_open) and v <= hi (v < hi when hi_open)."""

    lo: float = 0.0
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, v: float) -> bool:  # False for NaN
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open or self.hi == math.inf else v <= self.hi
        return above and below

    def __str__(self) -> str:
        if self.hi == math.inf:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


NONNEG, POSITIVE, FRACTION = Range(), Range(lo_open=True), Range(0.0, 1.0)
# 0 means "derived from the dataset" (epochs, student_epochs, batch_size, patience, ...) or "off", so it stays valid
_TRAIN_RANGES = {
    "epochs": NONNEG, "student_epochs": NONNEG, "batch_size": NONNEG, "lr": POSITIVE, "weight_decay": NONNEG,
    "warmup_frac": Range(0.0, 1.0, hi_open=True), "min_steps": NONNEG, "budget_epochs": NONNEG,
    "perfect_epochs": NONNEG, "max_epochs": Range(1.0), "patience": NONNEG, "min_val_windows": NONNEG,
    "time_budget_s": NONNEG, "distill_temperature": POSITIVE, "distill_alpha": FRACTION, "feature_beta": NONNEG,
    "distill_online_below": NONNEG, "modality_mix": FRACTION, "label_smoothing": Range(0.0, 1.0, hi_open=True),
    "aux_weight": NONNEG, "threads": NONNEG,
}
_MODEL_RANGES = {
    "d_model": NONNEG, "depth": NONNEG, "heads": NONNEG, "patch_s": NONNEG, "resampler_queries": NONNEG,
    "dropout": Range(0.0, 1.0, hi_open=True), "modality_dropout": Range(0.0, 1.0, hi_open=True),
}


def check_ranges(obj: Any, section: str, ranges: dict[str, Range]) -> None:
    """ConfigError naming the first key of `obj` outside its range (a value that would train nothing)."""
    for key, allowed in ranges.items():
        v = getattr(obj, key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not allowed.holds(v):
            raise ConfigError(f"{section}.{key} must be {allowed}, got {v!r}")


@dataclass
class ExportTarget:
    """An export target (export/*.toml): how to export, quantize and build for one kind of device."""

    name: str
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    batch: int = 1
    opset: int = 18
    min_opset: int = 9
    max_opset: int = 20
    calibration_windows: int = 256
    workspace_mb: int = 1024
    dla_core: int = -1  # -1 = no DLA; >=0 = that DLA core with GPU fallback
    tensorrt_version: str = ""  # "" = not a TensorRT target (ONNX Runtime)
    runtime: Literal["tensorrt", "onnxruntime"] = "onnxruntime"
    max_accuracy_drop: float = 1.0  # points, INT8 vs FP32
    min_top1_agreement: float = 0.99
    description: str = ""
    fp32_layers: list[str] = field(default_factory=lambda: ["logmel"])  # ONNX node-name patterns kept FP32 in FP16/INT8
    gpu_fallback: bool = True  # with DLA: let layers DLA cannot run fall back to the GPU
    parity_atol: float = 1e-4  # max |ONNX - torch| on FP32 outputs before export fails


@dataclass
class DeviceProfile:
    """A device profile (devices/*.toml)."""

    name: str
    arch: Literal["aarch64", "x86_64"] = "aarch64"
    gpu: str = ""  # e.g. "Ampere (Orin)"; "" = no GPU
    compute_capability: str = ""
    jetpack: str = ""
    cuda: str = ""
    tensorrt: str = ""
    dla_cores: int = 0
    memory_gb: float = 0.0
    fast_int8: bool = True
    default_target: str = "cpu-onnx-fp32"
    power_notes: str = ""
    description: str = ""
    # deploy engineer's additions: what the board ships and what the TensorRT on it can parse
    l4t: str = ""  # L4T (Jetson Linux) release, e.g. "36.3"
    python: str = ""  # the system Python of the stock image, e.g. "3.10"
    max_opset: int = 0  # highest ONNX opset the board's TensorRT parser takes; 0 = no TensorRT limit
    power_modes: list[str] = field(default_factory=list)  # nvpmodel modes, e.g. "0: MAXN 15W"
    tegrastats: bool = False  # the board has `tegrastats` (telemetry goes into the metrics topic)


@dataclass
class FusionConfig:
    """What `edge-gmm train` / `train-and-export` read: dataset, modalities, window, tasks, model, training."""

    dataset: str = ""
    modalities: list[str] = field(default_factory=list)  # subset of the dataset's; empty = all
    tasks: list[str] = field(default_factory=list)  # subset of the dataset's; empty = all
    window: WindowSpec = field(default_factory=WindowSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)


# ---------------------------------------------------------------- loading


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML, TOML or JSON file into a dict, with a clear error for a missing, undecodable or unparsable file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such file")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})",
                          hint="save the file as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    data = parse_mapping(text, p.suffix.lower(), str(p))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_mapping(text: str, suffix: str, source: str) -> Any:
    """Parse config text by file suffix (.toml, .json, else YAML). Every format refuses a duplicate key: a
    second `timeout_s:` silently winning over the first is a misconfiguration nobody sees."""
    try:
        if suffix == ".toml":  # TOML itself refuses duplicate keys
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.8 / 3.10 on JetPack 5 / 6
                import tomli as tomllib
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text, object_pairs_hook=_unique_pairs)
        import yaml

        return yaml.load(text, Loader=_unique_key_loader())  # a SafeLoader: plain data only
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except Exception as e:  # each parser raises its own type (RecursionError on absurd nesting); all mean "not valid syntax"
        raise ConfigError(f"{source}: cannot parse: {e}") from None


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ConfigError(f"duplicate key {k!r}")
        out[k] = v
    return out


@functools.lru_cache(maxsize=1)
def _unique_key_loader():
    """yaml.SafeLoader that refuses a key given twice in one mapping (merge keys `<<` may still be overridden).
    Built on first use: PyYAML is imported only when a YAML file is read."""
    import yaml

    class UniqueKeySafeLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # an unhashable key: the base class reports it
                if first is not key_node:
                    raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                                      f"(first at line {first.start_mark.line + 1})")
            return super().construct_mapping(node, deep=deep)

    return UniqueKeySafeLoader


def load_config(path: str | Path, cls: type, **defaults: Any):
    """Load a file into dataclass `cls`, strictly. `defaults` fill fields the file leaves out."""
    data = {**defaults, **read_mapping(path)}
    return from_dict(cls, data, source=str(path))


def from_dict(cls: type, data: Any, *, source: str = "<config>", where: str = ""):
    """Build dataclass `cls` from a mapping, naming the unknown key or wrong type on error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where or 'top level'}: expected a mapping, got {type(data).__name__}")
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        close = _closest(unknown[0], list(fields))
        raise ConfigError(
            f"{source}: unknown key {key!r}" + (f" (did you mean {close!r}?)" if close else ""),
            hint=f"valid keys here: {', '.join(fields)}",
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, source, f"{where}.{name}" if where else name)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        key = f"{where}.{missing[0]}" if where else missing[0]
        raise ConfigError(f"{source}: missing required key {key!r}")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) as plain JSON-able data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# `X | Y` is types.UnionType from 3.10; below that _type_hints turns it into typing.Union.
_UNION_ORIGINS = (typing.Union, getattr(types, "UnionType", typing.Union))
_GENERIC_BUILTINS = {"list": typing.List, "dict": typing.Dict, "tuple": typing.Tuple, "set": typing.Set,
                     "frozenset": typing.FrozenSet, "type": typing.Type}


def _type_hints(cls: type) -> dict[str, Any]:
    """typing.get_type_hints, also on Python 3.8/3.9 (the device side on JetPack 5), where the string
    annotations `str | None` and `list[int]` cannot be evaluated as written."""
    if sys.version_info >= (3, 10):
        return typing.get_type_hints(cls)
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        ns = dict(vars(sys.modules[klass.__module__]))
        for name, ann in vars(klass).get("__annotations__", {}).items():
            hints[name] = _eval_annotation(ann, ns) if isinstance(ann, str) else ann
    return hints


def _eval_annotation(text: str, ns: dict) -> Any:
    import ast

    class Rewrite(ast.NodeTransformer):
        def visit_BinOp(self, node):  # A | B -> Union[A, B]
            self.generic_visit(node)
            if not isinstance(node.op, ast.BitOr):
                return node
            return ast.Subscript(value=ast.Name("__Union", ast.Load()),
                                 slice=ast.Index(ast.Tuple([node.left, node.right], ast.Load())), ctx=ast.Load())

    tree = ast.fix_missing_locations(Rewrite().visit(ast.parse(text, mode="eval")))
    # list[int] -> typing.List[int]: builtins are not subscriptable before 3.9
    return eval(compile(tree, "<annotation>", "eval"), ns, {"__Union": typing.Union, **_GENERIC_BUILTINS})


def _type_name(tp: Any) -> str:
    # Spelled out, not repr(): the same words on every Python (typing.List vs list[int], Union vs X | Y).
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in _UNION_ORIGINS:
        return " | ".join(_type_name(a) for a in args)
    if origin in (list, dict):
        return origin.__name__ + (f"[{', '.join(_type_name(a) for a in args)}]" if args else "")
    if tp is type(None):
        return "None"
    if tp is Any:
        return "Any"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = ConfigError(f"{source}: key {key!r} expects {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source=source, where=key)
    if origin is Literal:
        if value not in args:
            raise bad
        return value
    if origin in _UNION_ORIGINS:
        for a in args:
            try:
                return _coerce(a, value, source, key)
            except ConfigError:
                continue
        raise bad
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return {k: _coerce(args[1], v, source, f"{key}.{k}") for k, v in value.items()} if args else dict(value)
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            raise bad from None
        if not math.isfinite(number):  # YAML's .nan / .inf: every timeout, rate and weight must be a real number
            raise ConfigError(f"{source}: key {key!r} must be a finite number, got {value!r}")
        return number
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if tp is type(None):
        if value is not None:
            raise bad
        return None
    return value


def _closest(word: str, options: list[str]) -> str | None:
    import difflib

    hits = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return hits[0] if hits else None
