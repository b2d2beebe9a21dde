"""Every place the search reaches into keras-tuner beyond its public API.

keras-tuner's public API (`keras_tuner.RandomSearch`, `HyperModel`,
`HyperParameters`, `Objective`, `Oracle`, `Tuner.run_trial`, `Tuner.search`,
`Tuner.save`, `Oracle.get_best_trials`, a trial's `trial_id`, `status`,
`score`, `message` and `hyperparameters`) is used anywhere in `kvae.tuning`.
Everything else it needs (an oracle's bookkeeping, the layout of the
project folder, the gRPC chief) is here, each use marked
`# keras-tuner internal: ..., checked on keras-tuner 1.4.8` with what it is
for. Upgrading keras-tuner means re-checking this file (and
tests/test_tuner.py, which covers all of it, the distributed chief included).
"""

import datetime
import json
import os
import socket
import time
from pathlib import Path

import keras_tuner

from kvae import bounds
from kvae.errors import KvaeError
from kvae.tuning.space import OBJECTIVE, PROJECT_NAME, TRIAL_RECORD, write_json

# -- tuners that leave a record per trial ------------------------------------------------


class _TrialRecords:
    """Mixin for keras-tuner tuners: writes who ran each trial and how long it took.

    `trial_<id>/kvae_trial.json` holds the tuner id (`KERASTUNER_TUNER_ID`:
    "tuner0" alone, the worker's id in a distributed search), host, process
    id and wall time. Unless `keep_checkpoints`, the trial's weight
    checkpoint is deleted afterwards: kvae retrains the best trial instead of
    reusing it, and a deep, wide model's checkpoints add up to gigabytes.
    """

    keep_checkpoints = False

    def run_trial(self, trial, *args, **kwargs):
        # keras-tuner internal: BaseTuner.tuner_id (the KERASTUNER_TUNER_ID this process runs as,
        # "tuner0" by default), checked on keras-tuner 1.4.8
        record = {"trial_id": trial.trial_id, "tuner_id": self.tuner_id, "host": socket.gethostname(),
                  "pid": os.getpid(), "started": datetime.datetime.now().isoformat(timespec="seconds")}
        start = time.perf_counter()
        ok = False
        try:
            # the trial trains on kvae's resumable callback stack in its own folder (history.csv, backup/)
            results = super().run_trial(trial, *args, trial_folder=self.get_trial_dir(trial.trial_id), **kwargs)
            ok = True
            return results
        finally:
            record.update(seconds=round(time.perf_counter() - start, 3), finished=ok)
            trial_dir = Path(self.get_trial_dir(trial.trial_id))
            write_json(trial_dir / TRIAL_RECORD, record)
            if not self.keep_checkpoints:
                # keras-tuner internal: Tuner._get_checkpoint_fname, the best epoch's weights saved as
                # trial_<id>/checkpoint.weights.h5 ("checkpoint" files under Keras 2), deleted here to
                # save disk, checked on keras-tuner 1.4.8
                for path in trial_dir.glob("checkpoint*"):
                    path.unlink(missing_ok=True)


class KvaeRandomSearch(_TrialRecords, keras_tuner.RandomSearch):
    """keras-tuner's `RandomSearch` with kvae's per-trial records."""


class KvaeBayesianOptimization(_TrialRecords, keras_tuner.BayesianOptimization):
    """keras-tuner's `BayesianOptimization` with kvae's per-trial records."""


class KvaeHyperband(_TrialRecords, keras_tuner.Hyperband):
    """keras-tuner's `Hyperband` with kvae's per-trial records (it keeps checkpoints: rounds resume from them)."""

    keep_checkpoints = True


def has_project(directory):
    """True when `directory` holds a saved keras-tuner project (a search to reload)."""
    # keras-tuner internal: the oracle's state saved as <directory>/<project_name>/oracle.json
    # (Oracle.save), checked on keras-tuner 1.4.8
    return (Path(directory) / PROJECT_NAME / "oracle.json").is_file()


def oracle_seed(seed):
    """The seed given to keras-tuner for the search seed `seed` (>= 0): `seed + 1`.

    keras-tuner's `Oracle` takes `seed or random.randint(1, 10000)`, so seed
    0, kvae's default, would draw a different sequence of trials in every
    fresh folder; shifting by one keeps every search seed, 0 included, fixed.
    (A reloaded search keeps the seed state saved in its oracle.json.)
    """
    # keras-tuner internal: Oracle.__init__ treats a falsy seed as none, checked on keras-tuner 1.4.8
    return bounds.check("search/search.seed", seed, label="search.seed") + 1


def make_tuner(kind, hypermodel, directory, settings):
    """The kvae tuner of `kind` ("random", "bayesian" or "hyperband") over `directory`, reloaded if it is there."""
    reloading = has_project(directory)
    common = dict(objective=keras_tuner.Objective(OBJECTIVE, "min"), seed=oracle_seed(settings["seed"]),
                  directory=str(directory), project_name=PROJECT_NAME, overwrite=False,
                  max_consecutive_failed_trials=max(3, settings["max_trials"]))
    try:
        if kind == "random":
            tuner = KvaeRandomSearch(hypermodel, max_trials=settings["max_trials"], **common)
        elif kind == "bayesian":
            tuner = KvaeBayesianOptimization(hypermodel, max_trials=settings["max_trials"], **common)
        else:
            tuner = KvaeHyperband(hypermodel, max_epochs=hypermodel.config["train"]["epochs"],
                                  factor=settings["factor"], hyperband_iterations=None, **common)
            # keras-tuner internal: Oracle.max_trials, set after construction because Hyperband takes
            # no max_trials (caps it like the other tuners; its oracle stops there), checked on
            # keras-tuner 1.4.8
            tuner.oracle.max_trials = settings["max_trials"]
    except ImportError as exc:  # bayesian needs scikit-learn and scipy
        raise KvaeError(f"tuner '{kind}': {exc}") from None
    except (RuntimeError, KeyError, ValueError) as exc:
        if not reloading:
            raise
        raise KvaeError(f"{directory}: cannot reload the keras-tuner project ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160]}); use another --dir") from None
    if kind != "hyperband":
        tuner.keep_checkpoints = settings["keep_checkpoints"]
    # keras-tuner internal: on a distributed worker BaseTuner replaces `tuner.oracle` with an
    # OracleClient (keras_tuner.src.distribute.oracle_client) that is no keras_tuner.Oracle and has no
    # state of its own, checked on keras-tuner 1.4.8
    if not isinstance(tuner.oracle, keras_tuner.Oracle):
        return tuner
    drop_finished_retries(tuner.oracle)
    return tuner


# -- the oracle's bookkeeping ------------------------------------------------------------


def drop_finished_retries(oracle):
    """Keep a reloaded oracle from rerunning trials that had finished.

    keras-tuner's `Oracle.end_trial` saves its state before it removes the
    trial from `ongoing_trials`, and in a distributed search nothing saves it
    again after the last trial, so `oracle.json` lists that finished trial as
    running and a reload queues it to run again. A trial whose own
    `trial.json` says COMPLETED or FAILED has finished: drop it from the queue.
    """
    # keras-tuner internal: Oracle._retry_queue (trial ids to run again, reloaded from oracle.json)
    # and Oracle.trials (trial id -> Trial), checked on keras-tuner 1.4.8
    queue = getattr(oracle, "_retry_queue", None)
    if queue:
        oracle._retry_queue = [t for t in queue if oracle.trials[t].status not in ("COMPLETED", "FAILED")]


def is_complete(oracle):
    """True when a (reloaded) oracle has no trial left: none running, none to retry, max_trials reached."""
    # keras-tuner internal: Oracle.ongoing_trials, Oracle._retry_queue, Oracle.max_trials and
    # Oracle.trials, read to tell a finished search without asking the oracle for a trial (which
    # would start one), checked on keras-tuner 1.4.8
    return (not oracle.ongoing_trials and not oracle._retry_queue
            and bool(oracle.max_trials) and len(oracle.trials) >= oracle.max_trials)


def trials(oracle):
    """Every trial the oracle knows, in the order they started (then any it never started)."""
    # keras-tuner internal: Oracle.trials (trial id -> Trial) and Oracle.start_order (trial ids as
    # they started), checked on keras-tuner 1.4.8
    order = list(oracle.start_order) + [t for t in oracle.trials if t not in oracle.start_order]
    return [oracle.trials[t] for t in order]


def trial_metric(trial, name):
    """The last value a trial recorded for metric `name`, or None."""
    # keras-tuner internal: Trial.metrics, a MetricsTracker (exists, get_last_value), checked on
    # keras-tuner 1.4.8
    if trial.metrics.exists(name):
        value = trial.metrics.get_last_value(name)
        return float(value) if value is not None else None
    return None


def trial_record(tuner, trial_id):
    """The `kvae_trial.json` that `_TrialRecords` wrote for a trial (an empty dict if there is none)."""
    # keras-tuner internal: each trial's folder is <project_dir>/trial_<id> (BaseTuner.get_trial_dir,
    # which would create it), checked on keras-tuner 1.4.8
    path = Path(tuner.project_dir) / f"trial_{trial_id}" / TRIAL_RECORD
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


# -- the distributed chief ---------------------------------------------------------------


def serve_as_chief(tuner, verbose=1, poll=0.5):
    """Serve the oracle to the workers until they are all done: keras-tuner's chief, checking more often.

    This is what `BaseTuner.search` does on the chief (`oracle_chief.start_server`),
    except that it checks for the end every `poll` seconds instead of every
    20, says so when the port is taken, and stops the gRPC server afterwards.
    """
    try:
        from concurrent import futures

        import grpc

        # keras-tuner internal: keras_tuner.src.protos (get_service_grpc, the generated gRPC service)
        # and keras_tuner.src.distribute.oracle_chief (OracleServicer, its stop_triggered flag,
        # exit_chief), the pieces of oracle_chief.start_server, checked on keras-tuner 1.4.8
        from keras_tuner.src import protos
        from keras_tuner.src.distribute import oracle_chief
    except ImportError:  # another keras-tuner layout: its own loop
        tuner.search(verbose=verbose)
        return
    oracle = tuner.oracle
    # keras-tuner internal: Oracle.verbose (whether the oracle prints trial summaries), set as
    # BaseTuner.search does, checked on keras-tuner 1.4.8
    oracle.verbose = verbose
    tuner.save()
    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise KvaeError(f"{address}: the chief cannot listen there (address not local, or port in use)")
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(poll)
    finally:
        server.stop(grace=2)
