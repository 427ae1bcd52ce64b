"""Search-space files: one YAML format, loaded into typed objects, sampled define-by-run.

A space is an ordered list of parameters. Each one is a constant, a distribution, a value
derived from an earlier parameter, or a ``choice`` whose options carry their own parameters
(a parameter exists only under its parent's option). Names are the named parameters of
``sweep.odapi.render`` or proto paths; what they mean for a given pipeline.config is render's and
validate's business, so this module never imports the OD API.

The format is documented in docs/search-spaces.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.core.errors import ConfigError, Problem
from sweep.core.inputs import InputError, load_yaml, short

if TYPE_CHECKING:
    import optuna
    from object_detection.protos.pipeline_pb2 import TrainEvalPipelineConfig

# A range bound: a number, or the name of a numeric parameter decided before this one
# (define-by-run lets e.g. the warm-up rate stay below the sampled base rate).
Bound = int | float | str
Values = dict[str, Any]

TOP_LEVEL_KEYS = ("description", "parameters", "points", "perturb")
BASE_POINT = "base"  # a point that takes its values from the base pipeline.config


@dataclass(frozen=True)
class Uniform:
    low: Bound
    high: Bound

    def suggest(self, trial: optuna.trial.Trial, name: str, values: Values) -> float:
        return trial.suggest_float(name, _at(self.low, values), _at(self.high, values))


@dataclass(frozen=True)
class LogUniform:
    low: Bound
    high: Bound

    def suggest(self, trial: optuna.trial.Trial, name: str, values: Values) -> float:
        return trial.suggest_float(name, _at(self.low, values), _at(self.high, values), log=True)


@dataclass(frozen=True)
class IntRange:
    low: Bound
    high: Bound
    step: int = 1
    log: bool = False

    def suggest(self, trial: optuna.trial.Trial, name: str, values: Values) -> int:
        low, high = int(_at(self.low, values)), int(_at(self.high, values))
        return trial.suggest_int(name, low, high, step=self.step, log=self.log)


@dataclass(frozen=True)
class Stepped:
    """A float on a grid: low, low + step, ..., high."""

    low: Bound
    high: Bound
    step: float

    def suggest(self, trial: optuna.trial.Trial, name: str, values: Values) -> float:
        low, high = _at(self.low, values), _at(self.high, values)
        return trial.suggest_float(name, low, high, step=self.step)


@dataclass(frozen=True)
class Categorical:
    choices: tuple[Any, ...]

    def suggest(self, trial: optuna.trial.Trial, name: str, values: Values) -> Any:
        return trial.suggest_categorical(name, list(self.choices))


@dataclass(frozen=True)
class Constant:
    """A fixed override: not searched, returned by ``define_by_run``."""

    value: Any


@dataclass(frozen=True)
class Derived:
    """``source``'s value times ``scale`` (an int when the source is an int)."""

    source: str
    scale: float = 1.0

    def value(self, values: Values) -> Any:
        src = values[self.source]
        out = src * self.scale
        return int(round(out)) if isinstance(src, int) and not isinstance(src, bool) else out


@dataclass(frozen=True)
class Choice:
    """A categorical parameter whose options each bring their own parameters."""

    options: tuple[tuple[Any, tuple[Param, ...]], ...]

    @property
    def choices(self) -> tuple[Any, ...]:
        return tuple(value for value, _ in self.options)

    def branch(self, value: Any) -> tuple[Param, ...]:
        for option, params in self.options:
            if option == value and type(option) is type(value):
                return params
        return ()

    def suggest(self, trial: optuna.trial.Trial, name: str, values: Values) -> Any:
        return trial.suggest_categorical(name, list(self.choices))


Distribution = Uniform | LogUniform | IntRange | Stepped | Categorical | Constant | Derived | Choice
SAMPLED = (Uniform, LogUniform, IntRange, Stepped, Categorical, Choice)


@dataclass(frozen=True)
class Param:
    name: str
    dist: Distribution

    @property
    def sampled(self) -> bool:
        return isinstance(self.dist, SAMPLED)


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    points: tuple[Mapping[str, Any] | BasePoint, ...] = ()
    description: str = ""
    path: Path | None = None
    perturb: tuple[str, ...] = ()  # what population-based training may change mid-trial

    def define_by_run(self, trial: optuna.trial.Trial) -> dict[str, Any]:
        """Suggest every active parameter on ``trial``; return the constants and derived values.

        Ray's OptunaSearch merges ``{**trial.params, **returned}`` into the trial's config.
        """
        values: Values = {}
        fixed: dict[str, Any] = {}
        _decide(self.params, trial, values, fixed)
        return fixed

    def sample(self, trial: optuna.trial.Trial) -> dict[str, Any]:
        """The flat config a trial receives: sampled parameters plus constants and derived."""
        fixed = self.define_by_run(trial)
        return {**trial.params, **fixed}

    def param_names(self) -> list[str]:
        """Names of the searched parameters (conditional ones included), in file order."""
        return [p.name for p, _ in self.walk() if p.sampled]

    def walk(self) -> Iterator[tuple[Param, tuple[tuple[str, Any], ...]]]:
        """Every parameter with the (parent, option) conditions under which it is active."""
        yield from _walk(self.params, ())

    def grid(self) -> tuple[dict[str, list[Any]], list[str]]:
        """``(values per searched parameter, names of the continuous ones)`` for a grid search:
        choices, int ranges and stepped floats with fixed bounds enumerate; the rest cannot."""
        values: dict[str, list[Any]] = {}
        continuous: list[str] = []
        for p, _ in self.walk():
            if not p.sampled:
                continue
            d = p.dist
            fixed = not isinstance(getattr(d, "low", 0), str) and not isinstance(
                getattr(d, "high", 0), str)
            if isinstance(d, Categorical | Choice):
                values[p.name] = list(d.choices)
            elif isinstance(d, IntRange) and fixed:
                values[p.name] = list(range(int(d.low), int(d.high) + 1, d.step))
            elif isinstance(d, Stepped) and fixed:
                n = int(math.floor((d.high - d.low) / d.step + 1e-9))
                values[p.name] = [round(d.low + i * d.step, 12) for i in range(n + 1)]
            else:
                continuous.append(p.name)
        return values, continuous

    def constants(self) -> dict[str, Any]:
        """Constants and derived values that hold in every trial (no condition, no sampling)."""
        values: Values = {}
        for p in self.params:
            if isinstance(p.dist, Constant):
                values[p.name] = p.dist.value
            elif isinstance(p.dist, Derived) and p.dist.source in values:
                values[p.name] = p.dist.value(values)
        return values

    def points_to_evaluate(
        self, base: TrainEvalPipelineConfig | None = None
    ) -> list[dict[str, Any]]:
        """Known configurations to run first, keyed like ``trial.params``.

        Points written ``base`` (or ``base: {overrides}``) take each parameter's value from the
        ``base`` pipeline, then the overrides; a value the space cannot hold is left to the
        sampler. Without ``base`` such points are skipped.
        """
        out = []
        for point in self.points:
            if isinstance(point, BasePoint):
                if base is not None:
                    out.append(self._from_base(base, point.overrides))
            else:
                out.append(dict(point))
        return out

    def base_point(self, base: TrainEvalPipelineConfig | None) -> dict[str, Any] | None:
        """The known point of the base config's own values (a plain ``base`` entry), keyed
        like ``trial.params``; None when the space has none (or there is no base config)."""
        if base is None or not any(isinstance(p, BasePoint) and not p.overrides
                                   for p in self.points):
            return None
        return self._from_base(base, {})

    def _from_base(self, base: TrainEvalPipelineConfig,
                   overrides: Mapping[str, Any]) -> dict[str, Any]:
        from sweep.odapi.render import read_param  # render imports the OD API protos

        point: dict[str, Any] = {}

        def visit(params: tuple[Param, ...]) -> None:
            for p in params:
                if not p.sampled:
                    continue
                if p.name in overrides:
                    value = overrides[p.name]
                else:
                    try:
                        value = read_param(base, p.name)
                    except ValueError:
                        continue
                    if not _contains(p.dist, value, point):
                        continue
                point[p.name] = value
                if isinstance(p.dist, Choice):
                    visit(p.dist.branch(value))

        visit(self.params)
        return point


@dataclass(frozen=True)
class BasePoint:
    """A known point read from the base pipeline, with ``overrides`` on top."""

    overrides: Mapping[str, Any]


def _at(bound: Bound, values: Values) -> float:
    return values[bound] if isinstance(bound, str) else bound


def _decide(params: tuple[Param, ...], trial: Any, values: Values, fixed: dict[str, Any]) -> None:
    for p in params:
        d = p.dist
        if isinstance(d, Constant):
            values[p.name] = fixed[p.name] = d.value
        elif isinstance(d, Derived):
            values[p.name] = fixed[p.name] = d.value(values)
        else:
            values[p.name] = d.suggest(trial, p.name, values)
            if isinstance(d, Choice):
                _decide(d.branch(values[p.name]), trial, values, fixed)


def _walk(params: tuple[Param, ...], cond: tuple) -> Iterator[tuple[Param, tuple]]:
    for p in params:
        yield p, cond
        if isinstance(p.dist, Choice):
            for option, sub in p.dist.options:
                yield from _walk(sub, (*cond, (p.name, option)))


def _contains(d: Distribution, value: Any, values: Values) -> bool:
    """Whether a sampler could return ``value`` (dynamic bounds read from ``values``)."""
    if isinstance(d, Categorical | Choice):
        return any(value == c and type(value) is type(c) for c in d.choices)
    if isinstance(d, Uniform | LogUniform | IntRange | Stepped):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if isinstance(d, IntRange) and not float(value).is_integer():
            return False
        try:
            low, high = _at(d.low, values), _at(d.high, values)
        except KeyError:
            return True  # the bound's parameter is not in this point: the sampler decides
        return low - 1e-12 * abs(low) <= value <= high + 1e-12 * abs(high)
    return False


# ---------------------------------------------------------------------------------------------
# Loading


def load_space(path: str | Path) -> SearchSpace:
    """Load and check a search-space file; raises ``ConfigError`` listing every problem."""
    path = Path(path)
    problems: list[Problem] = []
    space = parse_space(path, problems)
    if problems or space is None:
        raise ConfigError(problems)
    return space


def parse_space(path: Path, problems: list[Problem]) -> SearchSpace | None:
    """Parse ``path``, appending every problem found; None if the file cannot be read at all."""
    file = str(path)
    try:
        data = load_yaml(path, "the search-space file",
                         "check the path; shipped spaces are in search_spaces/")
    except InputError as e:
        problems.append(e.problem)
        return None
    if not isinstance(data, dict):
        problems.append(Problem(file, "", f"expected a mapping with 'parameters', got "
                                f"{type(data).__name__}", "see docs/search-spaces.md"))
        return None
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            problems.append(Problem(file, str(key), "unknown top-level key",
                                    f"use only {', '.join(TOP_LEVEL_KEYS)}"))
    description = data.get("description") or ""
    if not isinstance(description, str):
        problems.append(Problem(file, "description", "must be a string", "quote it"))
        description = ""
    raw = data.get("parameters")
    if not isinstance(raw, dict) or not raw:
        problems.append(Problem(file, "parameters", "missing or not a mapping of name -> spec",
                                "add a 'parameters:' mapping (see docs/search-spaces.md: Format)"))
        return None
    loader = _Loader(file, problems)
    params = loader.params(raw, "parameters", scope={})
    space = SearchSpace(params=params, description=description, path=path)
    points = _load_points(file, data.get("points") or [], space, problems)
    perturb = _load_perturb(file, data.get("perturb") or [], space, problems)
    return SearchSpace(params=params, points=points, description=description, path=path,
                       perturb=perturb)


def _load_perturb(file: str, raw: Any, space: SearchSpace,
                  problems: list[Problem]) -> tuple[str, ...]:
    """``perturb:``: names of searched parameters that PBT may change at each perturbation
    (which ones make sense mid-training is PBT's rule, checked by ``sweep validate``)."""
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        problems.append(Problem(file, "perturb", "expected a list of parameter names",
                                "write `perturb: [l2_weight, cosine_decay_learning_rate."
                                "learning_rate_base]`"))
        return ()
    sampled = {p.name for p, _ in space.walk() if p.sampled}
    for name in raw:
        if name not in sampled:
            problems.append(Problem(file, f"perturb.{name}", "not a searched parameter of "
                                    "this space", "list names from `parameters:` that have a "
                                    "distribution (constants cannot be perturbed)"))
    return tuple(n for n in raw if n in sampled)


@dataclass
class _Loader:
    file: str
    problems: list[Problem]

    def __post_init__(self) -> None:
        self.seen: set[str] = set()
        self.name = ""

    def bad(self, key: str, problem: str, fix: str) -> None:
        self.problems.append(Problem(self.file, key, problem, fix))

    def params(self, raw: Any, key: str, scope: dict[str, Distribution]) -> tuple[Param, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            self.bad(key, f"expected a mapping of parameter name -> spec, got {short(raw)}",
                     "write `name: spec` lines")
            return ()
        scope = dict(scope)  # names visible to later siblings and their options only
        out = []
        for name, spec in raw.items():
            where = f"{key}.{name}"
            if not self.name_ok(name, where):
                continue
            self.name = name  # for fixes that quote the parameter
            dist = self.dist(spec, where, scope)
            if dist is None:
                continue
            if isinstance(dist, Choice):
                # Options were loaded with scope; rebuild them now that the parent is visible.
                scope[name] = dist
                dist = self.choice(spec, where, scope)
                if dist is None:
                    continue
            scope[name] = dist
            out.append(Param(name, dist))
        return tuple(out)

    def name_ok(self, name: Any, where: str) -> bool:
        if not isinstance(name, str) or not name:
            self.bad(where, "parameter names must be non-empty strings", "quote the name")
            return False
        if "/" in name:
            self.bad(where, "parameter names must not contain '/' (Ray splits config keys on it)",
                     "use dots: e.g. model.ssd.num_classes")
            return False
        if name in self.seen:
            self.bad(where, f"parameter '{name}' is defined twice",
                     "define each parameter once (under one option of a choice)")
            return False
        self.seen.add(name)
        return True

    def dist(self, spec: Any, where: str, scope: dict[str, Distribution]) -> Distribution | None:
        if not isinstance(spec, dict):
            if isinstance(spec, str | int | float | bool | list) or spec is None:
                return Constant(spec)
            self.bad(where, f"unsupported value {short(spec)}", "use a number, string, bool or list")
            return None
        kinds = [k for k in spec if k in KINDS]
        if len(kinds) != 1:
            self.bad(where, f"a spec needs exactly one of {', '.join(KINDS)}, got keys "
                     f"{short(sorted(map(str, spec)))}",
                     "e.g. `{uniform: [0.1, 1.0]}`, `{categorical: [a, b]}`, or a plain value "
                     "for a constant")
            return None
        kind = kinds[0]
        allowed = {kind, *KINDS[kind]}
        for k in spec:
            if k not in allowed:
                self.bad(f"{where}.{k}", f"unknown key for a {kind} parameter",
                         f"use only {', '.join(sorted(allowed))}")
                return None
        if kind == "choice":
            return Choice(())  # filled by params() once the parent is in scope
        return getattr(self, f"_{kind}")(spec, where, scope)

    def choice(self, spec: dict, where: str, scope: dict[str, Distribution]) -> Choice | None:
        raw = spec["choice"]
        if not isinstance(raw, dict) or not raw:
            self.bad(f"{where}.choice", "expected a non-empty mapping of option -> parameters, "
                     f"got {short(raw)}", "e.g. `choice: {constant_learning_rate: {...}, "
                     "cosine_decay_learning_rate: {}}` (a plain list of values is `categorical`)")
            return None
        options = []
        for option, sub in raw.items():
            if not isinstance(option, str | int | float | bool):
                self.bad(f"{where}.choice", f"option {short(option)} is not a string/number/bool",
                         "use plain option names")
                continue
            options.append((option, self.params(sub, f"{where}.choice.{option}", scope)))
        return Choice(tuple(options))

    def _range(self, spec: dict, where: str, kind: str, n: int,
               scope: dict[str, Distribution]) -> list | None:
        raw = spec[kind]
        if not isinstance(raw, list) or len(raw) != n:
            shape = "[low, high]" if n == 2 else "[low, high, step]"
            self.bad(f"{where}.{kind}", f"expected {shape}, got {short(raw)}", f"write {kind}: {shape}")
            return None
        out = []
        for i, b in enumerate(raw):
            if isinstance(b, bool) or not isinstance(b, int | float | str):
                self.bad(f"{where}.{kind}", f"bound {short(b)} is not a number",
                         "use numbers (or the name of an earlier numeric parameter)")
                return None
            if isinstance(b, str):
                if i == 2:
                    self.bad(f"{where}.{kind}", "the step must be a number", "write a number")
                    return None
                if not _numeric(scope.get(b)):
                    self.bad(f"{where}.{kind}", f"bound {short(b)} is not a number nor a numeric "
                             "parameter defined before this one",
                             "use a number, or move the referenced parameter above this one")
                    return None
            elif not math.isfinite(b):
                self.bad(f"{where}.{kind}", f"bound {short(b)} is not finite", "use finite numbers")
                return None
            out.append(b)
        low, high = out[0], out[1]
        if isinstance(low, int | float) and isinstance(high, int | float):
            if low > high:
                self.bad(f"{where}.{kind}", f"inverted range: low={low} > high={high}",
                         "swap the bounds so that low <= high")
                return None
            if low == high:
                self.bad(f"{where}.{kind}", f"empty range: low == high == {low}",
                         f"widen the range, or fix the value with `{self.name}: {low}`")
                return None
        return out

    def _uniform(self, spec: dict, where: str, scope: dict) -> Uniform | None:
        r = self._range(spec, where, "uniform", 2, scope)
        return Uniform(*r) if r else None

    def _loguniform(self, spec: dict, where: str, scope: dict) -> LogUniform | None:
        r = self._range(spec, where, "loguniform", 2, scope)
        if not r:
            return None
        for b in r:
            if isinstance(b, int | float) and b <= 0:
                self.bad(f"{where}.loguniform", f"log-uniform bounds must be > 0, got {b}",
                         "use a positive lower bound (e.g. 1.0e-6), or `uniform` if 0 is allowed")
                return None
        return LogUniform(*r)

    def _int(self, spec: dict, where: str, scope: dict) -> IntRange | None:
        r = self._range(spec, where, "int", 2, scope)
        if not r:
            return None
        for b in r:
            if isinstance(b, float) and not b.is_integer():
                self.bad(f"{where}.int", f"bound {b} is not an integer", "use whole numbers")
                return None
        step, log = spec.get("step", 1), spec.get("log", False)
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            self.bad(f"{where}.step", f"step must be a positive integer, got {short(step)}",
                     "e.g. `step: 2`")
            return None
        if not isinstance(log, bool):
            self.bad(f"{where}.log", f"log must be true or false, got {short(log)}", "write `log: true`")
            return None
        if log and step != 1:
            self.bad(f"{where}.step", "an int range cannot be both log-scaled and stepped",
                     "drop `step` or `log`")
            return None
        if log and any(isinstance(b, int | float) and b <= 0 for b in r):
            self.bad(f"{where}.int", f"log-scaled bounds must be > 0, got {short(r)}",
                     "use a positive lower bound")
            return None
        return IntRange(*(int(b) if isinstance(b, float) else b for b in r), step=step, log=log)

    def _stepped(self, spec: dict, where: str, scope: dict) -> Stepped | None:
        r = self._range(spec, where, "stepped", 3, scope)
        if not r:
            return None
        if r[2] <= 0:
            self.bad(f"{where}.stepped", f"step must be > 0, got {r[2]}", "use a positive step")
            return None
        return Stepped(*r)

    def _categorical(self, spec: dict, where: str, scope: dict) -> Categorical | None:
        raw = spec["categorical"]
        if not isinstance(raw, list) or not raw:
            self.bad(f"{where}.categorical", f"expected a non-empty list, got {short(raw)}",
                     "write `categorical: [a, b]`")
            return None
        for c in raw:
            if c is not None and not isinstance(c, str | int | float | bool):
                self.bad(f"{where}.categorical", f"choice {short(c)} is not a string/number/bool",
                         "Optuna samples only plain values; use a `choice` for structured options")
                return None
        return Categorical(tuple(raw))

    def _derived(self, spec: dict, where: str, scope: dict) -> Derived | None:
        source, scale = spec["derived"], spec.get("scale", 1.0)
        if not isinstance(source, str) or source not in scope:
            self.bad(f"{where}.derived", f"{short(source)} is not a parameter defined before this one",
                     "name a parameter above this one (same option or an enclosing one)")
            return None
        if not _numeric(scope[source]):
            self.bad(f"{where}.derived", f"{short(source)} is not numeric", "derive from a number")
            return None
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            self.bad(f"{where}.scale", f"scale must be a number, got {short(scale)}",
                     "e.g. `scale: 0.5`")
            return None
        return Derived(source, float(scale))


# kind -> its optional keys
KINDS: dict[str, tuple[str, ...]] = {
    "uniform": (),
    "loguniform": (),
    "int": ("step", "log"),
    "stepped": (),
    "categorical": (),
    "derived": ("scale",),
    "choice": (),
}


def _numeric(d: Distribution | None) -> bool:
    if isinstance(d, Uniform | LogUniform | IntRange | Stepped | Derived):
        return True
    if isinstance(d, Constant):
        return isinstance(d.value, int | float) and not isinstance(d.value, bool)
    if isinstance(d, Categorical):
        return all(isinstance(c, int | float) and not isinstance(c, bool) for c in d.choices)
    return False


def _load_points(file: str, raw: Any, space: SearchSpace,
                 problems: list[Problem]) -> tuple[Mapping[str, Any] | BasePoint, ...]:
    if not isinstance(raw, list):
        problems.append(Problem(file, "points", "expected a list of points",
                                "write `points:` followed by `- {name: value, ...}` items"))
        return ()
    by_name = {p.name: (p, cond) for p, cond in space.walk()}
    out: list[Mapping[str, Any] | BasePoint] = []
    for i, point in enumerate(raw):
        key = f"points[{i}]"
        if point == BASE_POINT:
            out.append(BasePoint({}))
            continue
        from_base = isinstance(point, dict) and list(point) == [BASE_POINT]
        if from_base:
            point = point[BASE_POINT] or {}
            key = f"{key}.{BASE_POINT}"
        if not isinstance(point, dict):
            problems.append(Problem(file, key, f"expected a mapping or '{BASE_POINT}', got "
                                    f"{short(point)}", "write `- {name: value, ...}`"))
            continue
        ok = True
        for name, value in point.items():
            bad = _point_problem(name, value, point, by_name, from_base)
            if bad:
                ok = False
                problems.append(Problem(file, f"{key}.{name}", *bad))
        if ok:
            out.append(BasePoint(dict(point)) if from_base else dict(point))
    return tuple(out)


def _point_problem(name: str, value: Any, point: Mapping[str, Any],
                   by_name: dict, from_base: bool = False) -> tuple[str, str] | None:
    if name not in by_name:
        return ("not a parameter of this space",
                "use the names under `parameters:` (constants are fixed and cannot be set here)")
    param, cond = by_name[name]
    if not param.sampled:
        return ("is a constant or derived value, not a searched parameter",
                "remove it from the point, or make it a distribution")
    for parent, option in cond:
        if from_base and parent not in point:
            continue  # the base config decides; validate checks the outcome
        if parent not in point or point[parent] != option:
            return (f"only exists when {parent} = {short(option)}",
                    f"add `{parent}: {option}` to this point, or remove {name}")
    if not _contains(param.dist, value, point):
        return (f"value {short(value)} is outside the parameter's {describe(param.dist)}",
                "widen the range / add the choice, or fix the value")
    return None


def describe(d: Distribution) -> str:
    if isinstance(d, Categorical | Choice):
        return f"choices {short(list(d.choices))}"
    if isinstance(d, IntRange | Uniform | LogUniform | Stepped):
        return f"range [{d.low}, {d.high}]"
    return type(d).__name__


def candidate_values(d: Distribution) -> list[Any]:
    """Concrete values worth type-checking against a pipeline: constants, choices, bounds."""
    if isinstance(d, Constant):
        return [d.value]
    if isinstance(d, Categorical | Choice):
        return list(d.choices)
    if isinstance(d, IntRange):
        return [int(b) for b in (d.low, d.high) if not isinstance(b, str)]
    if isinstance(d, Uniform | LogUniform | Stepped):
        return [float(b) for b in (d.low, d.high) if not isinstance(b, str)]
    return []


def random_samples(space: SearchSpace, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` flat configs from Optuna's random sampler (for validation and tests)."""
    import optuna

    from sweep.search.samplers import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=make_sampler("random", seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.sample(trial))
        study.tell(trial, 0.0)
    return out


def replay(space: SearchSpace, point: Mapping[str, Any]) -> dict[str, Any]:
    """The flat config a trial gets for a complete known ``point`` (no study needed)."""
    import optuna

    trial = optuna.trial.FixedTrial(dict(point))
    return space.sample(trial)

