"""The Optuna study of one target: the only module that imports optuna.

Storage: a journal file in the output folder (`JournalFileStorage`'s backend). It is an
append-only log guarded by a lock file, safe with several processes and after a kill (a trial
is recorded whole when told, or not at all); SQLite through RDBStorage is Optuna's other file
store, but its own docs warn about concurrent writers, and a search run beside another one
resuming the same folder is exactly that.

Constraints go through `trial.set_constraint` (one per bound, value > 0 = missed by that
fraction); Optuna 5's samplers read them, and `constraints_func` is deprecated.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from edgepack.search.figures import Figures
from edgepack.search.spec import Space

JOURNAL = "study.journal"
MISSING = 1e12  # the value of an objective a point could not measure: worse than any real one

logging.getLogger("optuna").setLevel(logging.WARNING)  # optuna's own logger, not the root one
SIGNALS = {signal.SIGTERM, signal.SIGINT}


@contextmanager
def _whole():
    """SIGTERM and Ctrl-C wait until a journal write is done: the journal's file lock, interrupted
    while being taken, raises its own error instead of the interrupt (seen: a killed search exited
    with a RuntimeError about the lock), and a trial must be recorded whole or not at all. The
    signal is recorded meanwhile and raised again after (handlers can only be set in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived = []
    old = {sig: signal.signal(sig, lambda signum, frame: arrived.append(signum)) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if arrived:
            signal.raise_signal(arrived[0])


def open_study(folder: Path, name: str, objectives: dict, seed: int) -> optuna.Study:
    """The target's study, created or loaded (resume); trials a killed run left running are
    failed and their points queued again (a point whose figures were saved is read back, not redone)."""
    storage = JournalStorage(JournalFileBackend(str(folder / JOURNAL)))
    directions = ["maximize" if s == "max" else "minimize" for s in objectives.values()]
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True)
    with _whole():
        study = optuna.create_study(study_name=name, storage=storage, directions=directions, sampler=sampler,
                                    load_if_exists=True)
        # not `enqueue_trial(skip_if_exists=True)`: the failed trial itself holds the same params,
        # so Optuna would skip every requeue; a trial queued once is marked by its origin instead
        queued = {t.user_attrs.get("requeued_from") for t in study.get_trials(deepcopy=False)}
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(t.number, state=TrialState.FAIL)
            if t.params and t.number not in queued:
                study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})
    return study


def finished(study: optuna.Study) -> list:
    """Completed trials (FrozenTrial), oldest first; points skipped as unbuildable left out."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "skipped" not in t.user_attrs]


def waiting(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def ask(study: optuna.Study, space: Space):
    """A new trial and its point: {backend, precision, prune_ratio, prune_mode, keep_float} (and
    quantizer and calibration where the space varies them) for a model search, {knob path: value}
    for a recipe search."""
    ratio = space.prune_ratio
    sets = {"|".join(s) or "none": s for s in space.keep_float}
    with _whole():
        trial = study.ask()
        point = _suggest_recipe(trial, space.recipe) if space.recipe else _suggest(trial, space, ratio, sets)
        trial.set_user_attr("point", point)
    return trial, point


def _suggest_recipe(trial, knobs: dict) -> dict:
    point = {}
    for path, values in knobs.items():
        if isinstance(values, list):
            point[path] = trial.suggest_categorical(path, values)
        elif values.integer:
            point[path] = trial.suggest_int(path, values.low, values.high, step=values.step or 1, log=values.log)
        else:
            point[path] = trial.suggest_float(path, values.low, values.high, step=values.step, log=values.log)
    return point


def _suggest(trial, space: Space, ratio, sets: dict) -> dict:
    point = {
        "backend": trial.suggest_categorical("backend", space.backend),
        "precision": trial.suggest_categorical("precision", space.precision),
        "prune_ratio": (trial.suggest_categorical("prune_ratio", ratio) if isinstance(ratio, list)
                        else trial.suggest_float("prune_ratio", ratio.low, ratio.high, step=ratio.step)),
        "prune_mode": trial.suggest_categorical("prune_mode", space.prune_mode),
        "keep_float": sets[trial.suggest_categorical("keep_float", list(sets))],
    }
    # the INT8 knobs join a point only when the space varies them (points, and the studies that
    # hold them, of searches without them stay as they were), and only an INT8 point: a float
    # point at two budgets is one point, not two trials spent on one compile
    for knob, default in (("quantizer", "all"), ("calibration", "profile"), ("max_drop", None)):
        choices = getattr(space, knob)
        if point["precision"] == "int8" and choices is not None and choices != [default]:
            point[knob] = trial.suggest_categorical(knob, choices)
    return point


def skip(study: optuna.Study, trial, why: str, objectives: dict, misses: dict) -> None:
    """A point no compile can build, with the reason: told as the worst point, missing every
    constraint, so the sampler learns to stay away (a failed trial it would simply ignore and
    propose again, spending the asks); `finished` leaves it out of the search's rows."""
    with _whole():
        trial.set_user_attr("skipped", why)
    tell(study, trial, Figures("failed", error=why), objectives, misses)


def tell(study: optuna.Study, trial, fig: Figures, objectives: dict, misses: dict) -> None:
    """Record the trial: its figures (user attrs), constraints, and objective values."""
    values = [fig.values.get(n, MISSING if s == "min" else -MISSING) for n, s in objectives.items()]
    with _whole():
        for name, miss in misses.items():
            trial.set_constraint(name, float(miss))
        trial.set_user_attr("figures", fig.to_json())
        study.tell(trial, values)
