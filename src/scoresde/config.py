"""Configuration: one frozen dataclass per part, presets for the papers' runs, TOML files, ``--set`` overrides.

Only this module and the command line see a whole :class:`Config`; everything else takes plain keywords
(``scoresde.train.build_*`` translate). A config converts to a plain dict (:func:`to_dict`, stored in every
checkpoint) and back (:func:`from_dict`), and every value read from a file or from ``--set a.b=value`` is
checked against the field's declared type: an unknown field or a wrong type raises :class:`ConfigError`
naming the field, the value and what is allowed.

Presets (:data:`PRESETS`) follow the papers' hyper-parameters (Song & Ermon 2019, Sec. 5; Ho et al. 2020,
Sec. 4 and App. B; Song et al. 2021, App. H; Song et al. 2021b, Sec. 6): Adam, lr 2e-4 with a 5000-step
linear warm-up, gradient clipping at 1, EMA 0.999 (VE) or 0.9999 (VP, sub-VP), batch 128, 1.3 M iterations
(NCSN: lr 1e-3, no warm-up, no clipping, 200 k iterations; DDPM: 800 k). ``toy2d`` and ``digits`` run on a CPU.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field

__all__ = ["DataConfig", "ModelConfig", "SDEConfig", "LossConfig", "OptimConfig", "TrainingConfig",
           "SamplingConfig", "EvalConfig", "Config", "ConfigError", "PRESETS", "preset", "to_dict", "from_dict",
           "apply_overrides", "load_toml", "to_toml"]


class ConfigError(ValueError):
    """An unknown field, a wrong type or an unknown preset."""


@dataclass(frozen=True)
class DataConfig:
    name: str = "mixture"  # toy 2-D set, "digits", or an image set: mnist, cifar10, celeba, lsun, imagefolder
    root: str = "data"  # where torchvision data sets live
    download: bool = False
    image_size: int = 0  # 0 keeps the native size
    center_crop: int = 0  # 0: no crop
    random_flip: bool = False
    centered: bool = True  # model space [-1, 1] (True) or [0, 1]
    dequantize: bool = True  # uniform dequantisation of discrete data
    toy_size: int = 50000  # points drawn once (from the seed) for a toy data set


@dataclass(frozen=True)
class ModelConfig:
    network: str = "mlp"  # preset of scoresde.nn.build_network
    parameterization: str = "eps"  # eps | score | x0
    noise_cond: str = "999t"  # 999t | sigma | t | discrete_index
    discrete_steps: int = 0  # > 0: condition on / convert with a discrete chain of this many steps
    options: dict = field(default_factory=dict)  # extra keyword arguments of the network


@dataclass(frozen=True)
class SDEConfig:
    name: str = "vp"  # vp | subvp | ve
    beta_min: float = 0.1
    beta_max: float = 20.0
    sigma_min: float = 0.01
    sigma_max: float = 50.0


@dataclass(frozen=True)
class LossConfig:
    name: str = "dsm"  # dsm | ssm | smld | ddpm
    weighting: str = "sigma2"  # sigma2 | likelihood | none (dsm, ssm)
    importance_sampling: bool = False  # dsm only
    eps: float = 1e-5  # smallest training time
    num_scales: int = 10  # smld
    num_steps: int = 1000  # ddpm


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup: int = 5000  # linear warm-up steps (0: none)
    grad_clip: float = 1.0  # global norm (0: none)
    ema_decay: float = 0.9999


@dataclass(frozen=True)
class TrainingConfig:
    steps: int = 1300000
    batch_size: int = 128  # global batch (all processes, all accumulation micro-steps)
    grad_accum: int = 1
    seed: int = 0
    log_every: int = 100
    ckpt_every: int = 5000
    keep: int = 3  # checkpoints kept
    sample_every: int = 0  # 0: never
    eval_every: int = 0  # 0: never
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "none"  # none | bf16 (CUDA autocast)
    compile: bool = False  # torch.compile on CUDA
    workdir: str = "runs/default"


@dataclass(frozen=True)
class SamplingConfig:
    """How ``scoresde sample`` (and sampling during training) draws: ``method`` picks the sampler, the other
    fields are its keywords (each sampler reads only its own; see docs/cli.md)."""

    method: str = "pc"  # pc | euler_maruyama | ancestral | annealed_langevin | dpm_solver | ode
    steps: int = 1000  # reverse steps (pc, euler_maruyama, ancestral, dpm_solver); Langevin steps T per level
    #                    (annealed_langevin); steps of a fixed-step ODE solver (ode; adaptive solvers ignore it)
    predictor: str = "reverse_diffusion"  # pc: euler_maruyama | reverse_diffusion | ancestral | none
    corrector: str = "langevin"  # pc: langevin | ald | none
    snr: float = 0.16  # pc: the corrector's signal-to-noise ratio
    corrector_steps: int = 1  # pc: corrector steps after each predictor step
    levels: int = 10  # annealed_langevin: noise levels L (Song & Ermon 2019)
    step_lr: float = 2e-5  # annealed_langevin: ε of the step α_i = ε σ_i² / σ_L²
    order: int = 3  # dpm_solver: 1 (DDIM) | 2 (2M) | 3 (3M)
    grid: str = "time_quadratic"  # dpm_solver: time_quadratic | time_uniform | logsnr | edm
    solver: str = "dopri5"  # ode: dopri5 (adaptive, rtol/atol) or another adaptive / fixed-step method
    eps: float = 1e-3  # last time of the grid
    variance: str = "analytic"  # ancestral (and pc with predictor=ancestral): analytic | beta | beta_tilde
    num_samples: int = 64
    rtol: float = 1e-5  # ode
    atol: float = 1e-5  # ode


@dataclass(frozen=True)
class EvalConfig:
    divergence: str = "rademacher"  # rademacher | gaussian | exact
    probes: int = 1
    eps: float = 1e-5
    rtol: float = 1e-5
    atol: float = 1e-5
    num_samples: int = 0  # test points per evaluation (0: the whole test set)
    batch_size: int = 256


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------------------------- presets
def _cifar(network: str, sde: str, ema: float, *, deep: bool = False, **loss) -> Config:
    sde_cfg = SDEConfig(name=sde)
    ve = sde == "ve"
    return Config(
        data=DataConfig(name="cifar10", random_flip=True, centered=not ve),
        model=ModelConfig(network=f"{network}_deep_cifar10" if deep else f"{network}_cifar10",
                          parameterization="score" if ve else "eps", noise_cond="sigma" if ve else "999t"),
        sde=sde_cfg, loss=LossConfig(**loss), optim=OptimConfig(ema_decay=ema),
        training=TrainingConfig(steps=950000 if deep else 1300000, workdir=f"runs/{network}_{sde}"),
        sampling=SamplingConfig(predictor="reverse_diffusion", corrector="langevin", snr=0.16,
                                eps=1e-5 if ve else 1e-3),
    )


def _ncsn_cifar10() -> Config:
    return Config(
        data=DataConfig(name="cifar10", random_flip=True, centered=False, dequantize=False),
        model=ModelConfig(network="ncsn_cifar10", parameterization="score", noise_cond="discrete_index",
                          discrete_steps=10),
        sde=SDEConfig(name="ve", sigma_min=0.01, sigma_max=1.0), loss=LossConfig(name="smld", num_scales=10, eps=0.0),
        optim=OptimConfig(lr=1e-3, warmup=0, grad_clip=0.0, ema_decay=0.0),
        training=TrainingConfig(steps=200000, workdir="runs/ncsn_cifar10"),
        # annealed Langevin dynamics, L = 10 levels × T = 100 steps, ε = 2e-5 (Song & Ermon 2019, Sec. 5); the
        # uniform time grid from T to eps on this VE SDE is their geometric ladder σ = 1 … 0.01
        sampling=SamplingConfig(method="annealed_langevin", levels=10, steps=100, step_lr=2e-5, eps=1e-5),
    )


def _ddpm_cifar10() -> Config:
    return Config(
        data=DataConfig(name="cifar10", random_flip=True, dequantize=False),
        model=ModelConfig(network="ddpm_cifar10", options={"dropout": 0.1}),
        loss=LossConfig(name="ddpm", num_steps=1000), optim=OptimConfig(ema_decay=0.9999),
        training=TrainingConfig(steps=800000, workdir="runs/ddpm_cifar10"),
        sampling=SamplingConfig(predictor="ancestral", corrector="none"),
    )


def _scoreflow(sde: str) -> Config:
    base = _cifar("ddpmpp", sde, 0.9999, deep=True, weighting="likelihood", importance_sampling=True)
    return dataclasses.replace(base, training=dataclasses.replace(base.training, workdir=f"runs/scoreflow_{sde}"),
                               sampling=dataclasses.replace(base.sampling, method="ode"))


def _toy2d() -> Config:
    return Config(
        data=DataConfig(name="mixture", centered=False, dequantize=False),
        model=ModelConfig(network="mlp", options={"dim": 2, "hidden": 128, "layers": 3}),
        optim=OptimConfig(lr=2e-3, warmup=100, ema_decay=0.99),
        training=TrainingConfig(steps=2000, batch_size=256, log_every=100, ckpt_every=500, workdir="runs/toy2d"),
        sampling=SamplingConfig(steps=500, num_samples=1000, corrector="none"),
        eval=EvalConfig(num_samples=1000),
    )


def _digits() -> Config:
    return Config(
        data=DataConfig(name="digits", centered=True, dequantize=True),
        model=ModelConfig(network="digits"),
        loss=LossConfig(weighting="likelihood", importance_sampling=True),
        optim=OptimConfig(lr=2e-3, warmup=200, ema_decay=0.999),
        training=TrainingConfig(steps=4000, batch_size=128, log_every=100, ckpt_every=1000, workdir="runs/digits"),
        sampling=SamplingConfig(steps=500, num_samples=64, snr=0.16),
        eval=EvalConfig(num_samples=297),
    )


#: Preset name → factory. CIFAR-10 entries follow Song et al. 2021, Table 3 / App. H; ScoreFlow follows 2021b.
PRESETS: dict[str, typing.Callable[[], Config]] = {
    "toy2d": _toy2d,
    "digits": _digits,
    "ncsn_cifar10": _ncsn_cifar10,
    "ddpm_cifar10": _ddpm_cifar10,
    "ncsnpp_cifar10_ve": lambda: _cifar("ncsnpp", "ve", 0.999),
    "ncsnpp_deep_cifar10_ve": lambda: _cifar("ncsnpp", "ve", 0.999, deep=True),
    "ddpmpp_cifar10_vp": lambda: _cifar("ddpmpp", "vp", 0.9999),
    "ddpmpp_deep_cifar10_vp": lambda: _cifar("ddpmpp", "vp", 0.9999, deep=True),
    "ddpmpp_cifar10_subvp": lambda: _cifar("ddpmpp", "subvp", 0.9999),
    "ddpmpp_deep_cifar10_subvp": lambda: _cifar("ddpmpp", "subvp", 0.9999, deep=True),
    "scoreflow_cifar10_vp": lambda: _scoreflow("vp"),
    "scoreflow_cifar10_subvp": lambda: _scoreflow("subvp"),
}


def preset(name: str) -> Config:
    """The :class:`Config` of a named preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


# --------------------------------------------------------------------------------------------- dict round trip
def to_dict(cfg: Config) -> dict:
    """A plain nested dict (str, int, float, bool, dict only) — safe to store in a checkpoint."""
    return {s.name: dict(dataclasses.asdict(getattr(cfg, s.name))) for s in dataclasses.fields(Config)}


def from_dict(d: dict, base: Config | None = None) -> Config:
    """Build a config from a (partial) nested dict on top of ``base`` (default: the defaults), type-checked."""
    base = Config() if base is None else base
    if not isinstance(d, dict):
        raise ConfigError(f"a config must be a table/dict of sections, got {type(d).__name__}")
    sections = {}
    for name, values in d.items():
        section_cls = _section_types().get(name)
        if section_cls is None:
            raise ConfigError(f"unknown config section {name!r}; sections are {sorted(_section_types())}")
        if not isinstance(values, dict):
            raise ConfigError(f"config section {name!r} must be a table, got {values!r}")
        hints = typing.get_type_hints(section_cls)
        checked = {key: _check_value(f"{name}.{key}", hints.get(key), value) for key, value in values.items()}
        sections[name] = dataclasses.replace(getattr(base, name), **checked)
    return dataclasses.replace(base, **sections)


def _section_types() -> dict[str, type]:
    return typing.get_type_hints(Config)


def _check_value(where: str, kind, value):
    if kind is None:
        section, key = where.split(".", 1)
        allowed = [f.name for f in dataclasses.fields(_section_types()[section])]
        raise ConfigError(f"unknown config field {where!r}; fields of [{section}] are {allowed}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"config field {where!r} must be of type {kind.__name__}, got {value!r} "
                          f"({type(value).__name__})")
    return dict(value) if kind is dict else value


# --------------------------------------------------------------------------------------------- --set overrides
def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.field=value`` strings (``model.options.key=value`` sets one network option).

    The value is parsed by the field's type: ``true/false`` for bools, ints, floats, strings as written.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        path, raw = item.split("=", 1)
        parts = path.strip().split(".")
        if len(parts) < 2:
            raise ConfigError(f"override {item!r} must name a section and a field, e.g. training.steps=100")
        section, key = parts[0], parts[1]
        if section not in _section_types():
            sections = sorted(_section_types())
            raise ConfigError(f"unknown config section {section!r} in {item!r}; sections are {sections}")
        kind = typing.get_type_hints(_section_types()[section]).get(key)
        if kind is dict and len(parts) == 3:
            value = {**getattr(getattr(cfg, section), key), parts[2]: _parse_literal(raw)}
        elif len(parts) == 2:
            value = _parse_as(f"{section}.{key}", kind, raw.strip()) if kind is not None else raw
        else:
            raise ConfigError(f"override {item!r}: only dict fields (model.options) take a third name")
        cfg = from_dict({section: {key: value}}, cfg)
    return cfg


def _parse_as(where: str, kind, raw: str):
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return raw.lower() in ("true", "1")
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is dict:
            value = _parse_literal(raw)
            if not isinstance(value, dict):
                raise ValueError
            return value
    except ValueError:
        raise ConfigError(f"config field {where!r} must be of type {kind.__name__}, got {raw!r}") from None
    return raw


def _parse_literal(raw: str):
    """A TOML literal (number, bool, quoted string, inline table) or, failing that, the bare string."""
    try:
        return _toml_module().loads(f"v = {raw}")["v"]
    except Exception:  # noqa: BLE001 - any parse failure means "a bare string"
        return raw.strip()


# --------------------------------------------------------------------------------------------- TOML
def _toml_module():
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:
        import tomli
    except ImportError as err:
        raise ImportError("reading TOML on Python 3.10 needs the tomli package: pip install tomli") from err
    return tomli


def load_toml(path: str, base: Config | None = None) -> Config:
    """Read a TOML file: an optional top-level ``preset = "name"`` (which replaces ``base``), then
    ``[section]`` tables applied on top of it."""
    toml = _toml_module()
    with open(path, "rb") as f:
        try:
            d = toml.load(f)
        except toml.TOMLDecodeError as err:
            raise ConfigError(f"{path} is not valid TOML: {err}") from None
    name = d.pop("preset", None)
    if name is not None:
        base = preset(name)
    return from_dict(d, base)


def to_toml(cfg: Config) -> str:
    """The config as TOML text (what ``--dry-run`` prints; :func:`load_toml` reads it back)."""
    lines = []
    for section, values in to_dict(cfg).items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")
