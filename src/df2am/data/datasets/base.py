"""What a dataset is, in one small interface; each dataset is one subclass in one file.

A :class:`Dataset` knows its folder layout (one check that both its readers and
``df2am data verify`` use), its training records, its evaluation trials and which of them a
model is trained on, the query/gallery lists of a trial for its protocol options, the metric
rule the evaluator applies (a name of :data:`df2am.evaluation.PROTOCOLS`), and how to verify a
copy on disk. The registry :data:`df2am.data.datasets.DATASETS` maps names to instances; the
config, the CLI, the trainer and the evaluator ask it and never name a dataset themselves.

Adding a dataset (docs/architecture.md, "Adding a dataset")::

    class Market(Dataset):                      # data/datasets/market.py
        name, title, metric_rule = "market", "Market-1501", "llcm"
        trials = range(1)
        option_defaults = {}                    # no protocol options
        def layout_problems(self, root): ...
        def train_records(self, root, trial=None): ...
        def test_split(self, root, trial, options): ...
        def verify(self, root): ...

    DATASETS["market"] = Market()              # data/datasets/__init__.py: the one entry

Usage::

    from df2am.data.datasets import get_dataset

    ds = get_dataset("llcm")
    options = ds.resolve_options(direction="v2i")
    for t in ds.eval_trials(n_trials=10, model_trial=1):
        query, gallery = ds.test_split("/data/LLCM", t, options)
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from df2am.data.images import display_path, printable
from df2am.data.records import ImageRecord
from df2am.errors import ConfigError, DatasetError

#: File suffixes counted as images when a reader lists a folder. The reference scripts list
#: *every* file of a folder; on the released datasets that is the same list, and skipping stray
#: files (``Thumbs.db``, ``.DS_Store``) keeps the seeded samplers from drawing a non-image.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})


def list_image_names(folder: Path) -> list[str] | None:
    """Sorted image file names of ``folder``, or ``None`` if it does not exist.

    Sorted by name (Python string order), as the references' ``sorted(os.listdir(folder))``.
    """
    if not folder.is_dir():
        return None
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def parse_list_file(path: Path, what: str) -> list[tuple[str, int]]:
    """Parse a ``<relative path> <label>`` list file (RegDB and LLCM idx files), file order.

    Each non-blank line is ``<relative path> <label>`` with an integer label >= 0. Raises
    :class:`DatasetError` naming the file (``what`` says which one was expected) and the line
    when it is missing, empty or malformed.
    """
    if not path.is_file():
        raise DatasetError(
            f"missing idx file {path}: expected lines '<relative path> <label>' ({what})"
        )
    entries: list[tuple[str, int]] = []
    # utf-8-sig: a byte-order mark (Windows editors) is not part of the first path.
    lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.strip().rsplit(maxsplit=1)
        label: int | None = None
        if len(parts) == 2:
            try:
                label = int(parts[1])
            except ValueError:
                label = None
        if label is None or label < 0:
            raise DatasetError(
                f"malformed idx file {path}, line {number}: {line.strip()!r}: expected "
                "'<relative path> <label>' with an integer label >= 0"
            )
        entries.append((parts[0], label))
    if not entries:
        raise DatasetError(f"idx file {path} is empty: expected lines '<relative path> <label>'")
    return entries


def paired_label_problems(first: Path, first_labels: set[int], second: Path,
                          second_labels: set[int]) -> list[Problem]:
    """Training labels of two modality lists: each contiguous from 0, the same set in both
    (the cross-modality sampler needs every label in both). The readers raise the first
    problem; the verifiers list them all."""
    problems = []
    for path, labels in ((first, first_labels), (second, second_labels)):
        if labels and sorted(labels) != list(range(len(labels))):
            gaps = sorted(set(range(max(labels) + 1)) - labels)[:10]
            problems.append(Problem(str(path), f"training labels must be contiguous from 0, "
                                               f"missing {gaps}"))
    only_first = sorted(first_labels - second_labels)[:10]
    only_second = sorted(second_labels - first_labels)[:10]
    if only_first or only_second:
        problems.append(Problem(
            str(second), f"labels differ from {first.name}: only in {first.name} {only_first}, "
                         f"only in {second.name} {only_second}; expected the same labels in "
                         "both modalities"))
    return problems


# ------------------------------------------------------------------------------ verify report


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset copy: the file or folder, and what was expected."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class CountRow:
    """One line of the summary table."""

    split: str
    camera: str
    modality: str
    ids: int
    images: int


@dataclass
class VerifyReport:
    """What :func:`df2am.data.verify.verify_dataset` found; ``ok`` when there is no problem."""

    dataset: str
    root: Path
    rows: list[CountRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    decoded: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, path: str | Path, message: str) -> None:
        self.problems.append(Problem(display_path(path), message))

    def format(self) -> str:
        """The summary table, then notes, then every problem (one per line)."""
        header = ("split", "camera", "modality", "ids", "images")
        body = [(r.split, r.camera, r.modality, str(r.ids), str(r.images)) for r in self.rows]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

        def line(cells: tuple[str, ...]) -> str:
            return "  ".join(
                c.rjust(w) if i >= 3 else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        out = [f"{self.dataset} at {self.root}", line(header), line(tuple("-" * w for w in widths))]
        out += [line(row) for row in body]
        out.append(f"decoded images: {self.decoded}")
        out += [f"note: {n}" for n in self.notes]
        if self.problems:
            out.append(f"{len(self.problems)} problem(s):")
            out += [f"  {p}" for p in self.problems]
        else:
            out.append("no problems found")
        # Names with bytes that are not UTF-8 (lone surrogates) would make printing raise.
        return printable("\n".join(out))


# ---------------------------------------------------------------------------- protocol options


@dataclass(frozen=True)
class TestOptions:
    """The protocol options of one evaluation. Options a dataset does not have are ``None``.

    Attributes:
        mode: SYSU-MM01 search mode ("all" | "indoor").
        sampler: SYSU-MM01 gallery sampler ("seeded" | "official").
        shots: SYSU-MM01 gallery shots (1 | 10).
        split_file: SYSU-MM01 official split file ("" = the default location).
        direction: query→gallery direction (RegDB "v2t" | "t2v"; LLCM "i2v" | "v2i" |
            "v2i_transposed").
    """

    __test__ = False  # not a pytest test class

    mode: str | None = None
    sampler: str | None = None
    shots: int | None = None
    split_file: str | None = None
    direction: str | None = None


#: The option names, in :class:`TestOptions` order.
OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TestOptions))


def check_int(value: Any, allowed: range, what: str) -> int:
    """``value`` as an int if it is an integer in ``allowed``; else a :class:`ConfigError`."""
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer))
    if not ok or value not in allowed:
        raise ConfigError(f"{what}, got {value!r}")
    return int(value)


class Dataset(ABC):
    """One RGB–IR re-ID dataset: layout, training records, trials, test protocol, checks.

    Class attributes:
        name: registry key ("sysu").
        title: printed name ("SYSU-MM01").
        metric_rule: the evaluation rule (:data:`df2am.evaluation.PROTOCOLS`): "sysu"
            (camera-room filter), "regdb" (no filter, image-level CMC), "llcm" (same id and
            camera dropped).
        trials: valid evaluation trial numbers.
        trial_rule: how the trials are numbered, for error messages.
        trial_per_model: True when each trial has its own training split, so one model is
            trained (and tested) per trial (RegDB); False when one model is tested on every
            trial's gallery (SYSU-MM01, LLCM).
        option_choices: the protocol options this dataset has → their valid values
            (``None`` = any string); options missing here do not apply and are ``None``.
        option_defaults: the default of each option in ``option_choices``.
        direction_help: one line per direction, for ``--help`` and docs.
        layout_help: what the root folder should hold, for ``--help`` and errors.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    metric_rule: ClassVar[str]
    trials: ClassVar[range]
    trial_rule: ClassVar[str]
    trial_per_model: ClassVar[bool] = False
    option_choices: ClassVar[dict[str, tuple[Any, ...] | None]] = {}
    option_defaults: ClassVar[dict[str, Any]] = {}
    direction_help: ClassVar[dict[str, str]] = {}
    layout_help: ClassVar[str] = ""

    # ---------------------------------------------------------------- trials and options

    def check_trial(self, trial: int) -> int:
        """Validate a trial number of this dataset; return it as an int."""
        return check_int(trial, self.trials, f"{self.title} trials are numbered "
                                             f"{self.trial_rule}")

    def resolve_options(self, **given: Any) -> TestOptions:
        """The options of this dataset, each the given value or its default, validated.

        ``given`` maps option names to values; ``None`` means "the default". Options this
        dataset does not have are ignored (they come back ``None``).
        """
        unknown = sorted(set(given) - set(OPTION_NAMES))
        if unknown:
            raise ConfigError(f"unknown protocol option(s) {unknown}: expected {OPTION_NAMES}")
        values: dict[str, Any] = {}
        for key, choices in self.option_choices.items():
            value = given.get(key)
            value = self.option_defaults[key] if value is None else value
            if choices is not None and value not in choices:
                raise ConfigError(
                    f"eval.{key}: {self.title} expects one of {list(choices)}, got {value!r}"
                )
            values[key] = value
        return TestOptions(**values)

    def check_applicable(self, given: dict[str, Any], *, spell: Any = None,
                         advice: Any = None) -> None:
        """Refuse a protocol option this dataset does not have — the one rule for a config key
        (``eval.direction`` on SYSU-MM01) and an argument (``df2am eval --direction`` on
        SYSU-MM01, ``evaluate_model(direction=...)``).

        Args:
            given: option name → value the user set (a config key that differs from its
                default, an argument that was given); ``None`` = not set.
            spell: option name → how the user wrote it (default: the command-line option,
                ``--direction``, also for the Python keyword; the config passes
                ``eval.direction``).
            advice: option name → what to do instead (default: do not give it).

        Raises:
            ConfigError: naming the option, its value and the dataset's own options.
        """
        spell = spell or (lambda name: f"--{name.replace('_', '-')}")
        for name, value in given.items():
            if value is None or name in self.option_choices:
                continue
            has = ", ".join(spell(k) for k in self.option_choices) or "none"
            what = advice(name) if advice is not None else "do not give it for this dataset"
            raise ConfigError(
                f"{spell(name)}={value!r} does not apply to {self.title} (data.dataset="
                f"{self.name}; its protocol options: {has}); {what}")

    def eval_trials(self, n_trials: int | None, model_trial: int) -> list[int]:
        """The trials one evaluation runs: the model's own trial when ``trial_per_model``,
        else the first ``n_trials`` (``None`` = all) of :attr:`trials`."""
        if self.trial_per_model:
            if n_trials not in (None, 1):
                raise ConfigError(
                    f"{self.title}: a model is tested on its own trial (data.trial="
                    f"{model_trial}), got trials={n_trials}; the {len(self.trials)}-trial mean "
                    f"needs one model per trial (df2am train --trials 1-{len(self.trials)})"
                )
            return [self.check_trial(model_trial)]
        n = len(self.trials) if n_trials is None else n_trials
        check_int(n, range(1, len(self.trials) + 1),
                  f"eval.trials must be in 1..{len(self.trials)} for {self.title}")
        return list(self.trials)[:n]

    def describe(self, options: TestOptions, trials: list[int]) -> str:
        """A one-line description of the protocol, e.g. for the printed table's title."""
        n = len(trials)
        return f"{self.title}, {n} trial{'s' if n != 1 else ''}"

    # ---------------------------------------------------------------- layout and records

    @abstractmethod
    def layout_problems(self, root: Path) -> list[Problem]:
        """Every problem of the top-level layout (folders, index files); empty if usable.

        Each message reads after "<title> root <root> ", e.g. "lacks idx/: expected ...".
        The readers raise the first one; ``df2am data verify`` lists them all.
        """

    def check_layout(self, root: str | Path) -> Path:
        """``root`` as a Path if its layout is usable; else a :class:`DatasetError`."""
        root = Path(root)
        problems = self.layout_problems(root)
        if problems:
            more = (f" ({len(problems) - 1} more: df2am data verify --dataset {self.name} "
                    f"--root {root} lists them)" if len(problems) > 1 else "")
            raise DatasetError(f"{self.title} root {root} {problems[0].message}{more}")
        return root

    @abstractmethod
    def train_records(self, root: str | Path, trial: int | None = None) -> list[ImageRecord]:
        """Training records with labels 0..N-1; ``trial`` only where ``trial_per_model``."""

    @abstractmethod
    def test_split(
        self, root: str | Path, trial: int, options: TestOptions
    ) -> tuple[list[ImageRecord], list[ImageRecord]]:
        """``(query, gallery)`` of one trial under ``options`` (from :meth:`resolve_options`)."""

    #: What :meth:`identity_key` compares, for messages ("id", "person folder").
    identity_name: ClassVar[str] = "id"

    def identity_key(self, record: ImageRecord) -> Hashable | None:
        """What identifies a person in both the training and the test records (the trainer's
        train/test overlap check), or ``None`` when the record carries no such identity. The
        default: the dataset's own id, ``pid``."""
        return record.pid

    def test_records(self, root: str | Path) -> list[ImageRecord]:
        """Every test image (both modalities), for diagnostics; the default is the union of
        trial 0's query and gallery of the default options."""
        first = self.trials[0]
        query, gallery = self.test_split(root, first, self.resolve_options())
        return list(query) + list(gallery)

    # ---------------------------------------------------------------- verification

    @abstractmethod
    def verify(self, root: Path) -> tuple[VerifyReport, list[Path]]:
        """Check a copy without stopping at the first problem: the report (counts, notes,
        problems) and the images to decode (the caller decodes them)."""
