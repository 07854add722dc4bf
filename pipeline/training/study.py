"""One optuna study shared by many search workers: its database, its recipe, and the loop that stops at its total.

Every worker (a process on one GPU, a machine, a SLURM array task) opens the same study through optuna's
`RDBStorage` (sqlite by default, PostgreSQL or MySQL for many machines) and asks it for the next trial. optuna does
the rest: a heartbeat thread per running trial, and a trial whose worker stopped beating is failed and queued again
with its values (`RetryHeartbeatStaleTrialCallback`). What optuna leaves open is the total across workers: its
`MaxTrialsCallback` stops a worker after the total has finished, so workers that finish together each start one
more. Here the check and the `ask` run under a lock every worker sees (`StudyLock`, a study of its own in the same
database), so the study never holds more than `--n_trials` trials that are not failed.

A worker may itself be several processes (`torchrun --nproc_per_node 8 -m vit_pipeline search ...`): rank 0 talks to
the study and sends each trial's values to the others (`Followers`), which train with it and prune when it prunes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import Callable

from vit_pipeline import PipelineError
from vit_pipeline.utils import one_line

logger = logging.getLogger("vit_pipeline")

# Retries of a trial whose worker died (then it stays failed: it may be the trial that kills its workers).
MAX_RETRY = 3
# A lock seen unchanged for this long belongs to a worker that died while holding it (it is held for one `ask`).
LOCK_STALE_S = 60.0
# Recipe keys that may differ between the workers of one study: where each writes, and what the best recipe pushes.
WORKER_KEYS = ("output_dir", "logging_dir", "run_name", "push_to_hub")
# Drivers SQLAlchemy loads for a URL's dialect (`postgresql://` is psycopg 3 in SQLAlchemy 2.1), and where they are.
DRIVER_EXTRAS = {"psycopg": "pip install 'vit-pipeline[postgres]'", "psycopg2": "pip install psycopg2-binary",
                 "pymysql": "pip install pymysql", "mysqldb": "pip install mysqlclient"}


def default_storage(output_dir) -> str:
    """The study's URL when no --storage is given: sqlite in the search folder, as before workers existed."""
    return f"sqlite:///{os.path.join(output_dir, 'study.db')}"


def shown_url(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: the caller says so
        return url


def open_storage(url: str, heartbeat_interval: int):
    """optuna's `RDBStorage` on `url`, with heartbeats and retries of trials whose worker stopped beating.

    The database is reached now (optuna creates its tables), so a bad URL, a missing driver, an unreachable server
    or refused credentials stop the search before any training.

    Args:
        url: any SQLAlchemy URL optuna takes (`sqlite:///S/study.db`, `postgresql://user:pass@host/db`, ...).
        heartbeat_interval: seconds between a running trial's heartbeats; after twice that without one, the trial
            is failed and its values queued again.

    Raises:
        PipelineError: one line naming the URL (password hidden) and what went wrong.
    """
    import optuna
    import sqlalchemy
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as err:
        raise PipelineError(f"--storage {url!r} is not a database URL (e.g. postgresql://user@host/db or "
                            f"sqlite:///study.db): {one_line(err)}") from err
    _check_driver(parsed)
    # A server that does not answer: fail after 10 s instead of the driver's minutes. sqlite: several workers on one
    # file wait for each other's writes for up to a minute.
    connect_args = {"timeout": 60} if parsed.get_backend_name() == "sqlite" else {"connect_timeout": 10}
    for attempt in range(5):
        try:
            with _quiet_experimental():
                return optuna.storages.RDBStorage(
                    url, engine_kwargs={"connect_args": connect_args}, heartbeat_interval=heartbeat_interval,
                    grace_period=2 * heartbeat_interval,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=MAX_RETRY))
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, OSError) as err:
            cause = getattr(err, "orig", None) or err.__cause__ or err
            if attempt < 4 and _created_meanwhile(err):
                time.sleep(0.5 * (attempt + 1))  # workers started together on a new database: the tables exist now
                continue
            raise PipelineError(f"cannot open the study database {shown_url(url)}: {one_line(cause)}") from err


def _created_meanwhile(err: Exception) -> bool:
    """Whether opening the database failed because another worker created optuna's tables at the same moment."""
    import sqlalchemy

    if isinstance(err, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)):
        return True
    return isinstance(err, sqlalchemy.exc.OperationalError) and "already exists" in str(err)


@contextlib.contextmanager
def _quiet_experimental():
    # Heartbeats and their retry callback are "experimental" in optuna since 2.8: the warning is not the user's.
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _check_driver(parsed) -> None:
    """Refuse, in one line naming what to install, a URL whose database driver is missing."""
    import sqlalchemy

    try:
        dialect = parsed.get_dialect()
        dialect.import_dbapi()
    except sqlalchemy.exc.NoSuchModuleError as err:
        raise PipelineError(f"--storage {shown_url(parsed.render_as_string())}: SQLAlchemy has no database "
                            f"'{parsed.drivername}' ({one_line(err)})") from err
    except ImportError as err:
        driver = (parsed.get_driver_name() or "").lower()
        hint = DRIVER_EXTRAS.get(driver, f"install the '{driver}' driver")
        raise PipelineError(f"--storage {parsed.get_backend_name()}:// needs the {driver} driver: {hint}") from err


def recipe_fingerprint(recipe: dict, space: dict) -> str:
    """A hash of what makes two workers' trials comparable: the resolved recipe (less where each worker writes) and
    the search space."""
    shared = {k: v for k, v in recipe.items() if k not in WORKER_KEYS and not k.startswith("hub_")}
    text = json.dumps({"recipe": shared, "space": space}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def open_study(storage, name: str, fingerprint: str, *, maximize: bool, create: bool):
    """Create the study or join it, refusing one that was started with another recipe or search space.

    Args:
        create: False for a worker that only reports (`--n_trials 0`): the study must exist.

    Raises:
        PipelineError: no such study (when reporting), or the study's recipe differs from this one.
    """
    import optuna

    if not create:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            raise PipelineError(f"there is no study '{name}' in {shown_url(storage.url)} yet: run the search with "
                                "--n_trials N first") from None
    else:
        study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                    direction="maximize" if maximize else "minimize",
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    known = study.user_attrs.get("recipe_fingerprint")
    if known is None and create:
        # The first worker (or a study from before fingerprints) records it; later workers must match it.
        study.set_user_attr("recipe_fingerprint", fingerprint)
    elif known is not None and known != fingerprint:
        raise PipelineError(f"study '{name}' in {shown_url(storage.url)} was started with another recipe or search "
                            f"space (fingerprint {known}, this one {fingerprint}): run every worker with the same "
                            "recipe, flags and --space, or start a new study with --study_name")
    return study


class StudyLock:
    """A lock every worker of the study sees: a study named `<name>.lock` in the same database (creating a study is
    atomic: exactly one worker succeeds). Held only while a worker counts the trials and asks for one.

    A lock left by a worker that died holding it (seen unchanged for `LOCK_STALE_S`) is taken over.
    """

    def __init__(self, storage, name: str):
        self.storage = storage
        self.name = f"{name}.lock"
        self.held_id: int | None = None

    def acquire(self) -> None:
        import optuna

        seen, since = None, time.monotonic()
        while True:
            try:
                # A read first: waiting workers must not queue writes in front of the holder's (sqlite has one writer).
                holder = self.storage.get_study_id_from_name(self.name)
            except KeyError:
                try:
                    study_id = self.storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], self.name)
                    self.storage.set_study_user_attr(study_id, "holder", f"{socket.gethostname()} {os.getpid()}")
                    self.held_id = study_id
                    return
                except optuna.exceptions.DuplicatedStudyError:
                    continue  # another worker took it first
            if holder != seen:
                seen, since = holder, time.monotonic()
            elif time.monotonic() - since > LOCK_STALE_S:
                logger.warning("taking over the study lock %s of a worker that stopped holding it", self.name)
                with contextlib.suppress(KeyError):
                    self.storage.delete_study(holder)
                continue
            time.sleep(0.05 + 0.1 * random.random())  # spread out the workers that wait

    def release(self) -> None:
        if self.held_id is not None:
            held, self.held_id = self.held_id, None
            with contextlib.suppress(KeyError):
                self.storage.delete_study(held)


def run_until_total(study, total: int, objective: Callable, *, seed: int, poll_s: float) -> int:
    """Run trials of `objective` until the study holds `total` trials that are not failed and none is running.

    Each round, under the study's lock: fail the trials whose worker stopped beating (optuna queues their values
    again), count the others, and ask for one more trial when there is room or a queued one; the lock is released as
    the trial starts. With no room left, wait for the other workers' running trials: one may still fail and be
    queued again.

    Args:
        seed: the sampler's seed; each trial's is `seed + the number of trials before it`, so one worker repeats its
            values run after run and two workers never draw the same ones.

    Returns:
        The number of trials this worker ran.
    """
    import optuna
    from optuna.trial import TrialState

    lock = StudyLock(study._storage, study.study_name)
    ran, current = 0, {}

    def locked_objective(trial):
        lock.release()  # the trial exists now: the others may count it and ask for theirs
        current["trial"] = trial
        return objective(trial)

    waited_for: set[int] = set()
    while True:
        lock.acquire()
        try:
            with _quiet_experimental():
                optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            counted = [t for t in trials if t.state != TrialState.FAIL]
            queued = any(t.state == TrialState.WAITING for t in trials)
            running = {t.number for t in trials if t.state == TrialState.RUNNING}
            if len(counted) < total or queued:
                # TPE with the constant liar: the trials running elsewhere count as bad guesses to stay away from.
                study.sampler = optuna.samplers.TPESampler(seed=seed + len(trials), n_startup_trials=5,
                                                           constant_liar=True)
                current.clear()
                try:
                    study.optimize(locked_objective, n_trials=1, gc_after_trial=True)
                except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
                    if not _taken_back(study, current.get("trial")):
                        raise
                ran += 1
                continue
        finally:
            lock.release()
        if not running:
            return ran
        if running != waited_for:
            logger.info("search: %d trial(s) in all; waiting for trial(s) %s of other workers (a trial whose worker "
                        "stopped is queued again after %d s without a heartbeat)", total,
                        ", ".join(map(str, sorted(running))), 2 * study._storage.get_heartbeat_interval())
            waited_for = running
        time.sleep(poll_s)


def _taken_back(study, trial) -> bool:
    """Whether `trial` was failed by another worker while it ran here (its heartbeats came too late: a machine too
    busy for its --heartbeat_interval); its values are queued again, so this worker goes on with the next trial."""
    from optuna.trial import TrialState

    if trial is None or study._storage.get_trial(trial._trial_id).state != TrialState.FAIL:
        return False
    logger.warning("search: trial %d was failed by another worker while it ran here (no heartbeat for %d s: raise "
                   "--heartbeat_interval on busy machines); its values are queued again", trial.number,
                   2 * study._storage.get_heartbeat_interval())
    return True


def store_trial_recipe(trial, recipe_file) -> None:
    """Keep the trial's resolved recipe in the study: any worker writes the best recipe from the database, whether or
    not it sees the trial's folder."""
    from pathlib import Path

    import yaml

    with contextlib.suppress(OSError, yaml.YAMLError):
        trial.set_user_attr("recipe", yaml.safe_load(Path(recipe_file).read_text()))


class Followers:
    """The processes of one worker launched with torchrun: rank 0 talks to the study and sends each trial (its
    train arguments) and each pruning decision to the others over a gloo group; the others train with it.

    The group's timeout is long: the followers wait for rank 0 while it waits for other workers' trials.
    """

    def __init__(self, training_args):
        import datetime

        import torch.distributed as dist

        # The training arguments' device set-up starts the process group the trials' training will use.
        _ = training_args.device
        self.dist = dist
        self.rank = dist.get_rank()
        self.group = dist.new_group(backend="gloo", timeout=datetime.timedelta(days=30))

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def send(self, message):
        """Rank 0: send `message` to the others; the others: receive it (both return it)."""
        box = [message if self.leader else None]
        self.dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def follow(self, train: Callable[[list[str], list], dict], prune_callback: Callable) -> int:
        """The loop of a process other than rank 0: train each trial rank 0 sends, until it sends None.

        Returns:
            The number of trials followed.
        """
        import optuna

        followed = 0
        while (argv := self.send(None)) is not None:
            followed += 1
            with contextlib.suppress(optuna.TrialPruned):
                train(argv, [prune_callback(self)])
        return followed


def is_launched() -> bool:
    """Whether this process is one of several of a torchrun / accelerate launch."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1
