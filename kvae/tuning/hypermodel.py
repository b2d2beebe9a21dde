"""The keras-tuner hypermodel of the FC VAE, and the metrics it reports for each trial."""

import copy
import time

import keras
import keras_tuner
import numpy as np

from kvae.config import load_config
from kvae.errors import KvaeError
from kvae.runs import RunFolder, read_history
from kvae.training import WindowEpochs, build_model, compile_model, fit_in_folder, seed_everything
from kvae.training.callbacks import InformationRate
from kvae.tuning.space import OBJECTIVE, PARAMETERS, declare, parse_space


class FCVAEHyperModel(keras_tuner.HyperModel):
    """A keras-tuner `HyperModel` for `kvae.models.FCVAE`.

    `build(hp)` substitutes the searched values (hidden_layers, learning_rate
    and optionally hidden_units and latent_dim) into a kvae config and returns
    the compiled model `kvae.training.build_model`/`compile_model` make of it.
    `fit` trains with kvae's callbacks (window epochs, NaN guard, information rate;
    with a trial folder, the skeleton of `kvae fit`) and returns the metrics of
    the best epoch plus `seconds`, the training time, which keras-tuner records
    with the trial.

    Args:
        config: dict, str or Path. A kvae config (resolved or not); its
            `model.type` must be "fc".
        space: dict or None. The search space, see `parse_space`.
        train_source: kvae.data.WindowSource or None. The training windows'
            source, needed with the tf.data front end to tell it the epoch.
        name: str. Name of the hypermodel. Defaults to "fc_vae".

    Example:
    ```python
    import keras_tuner
    from kvae.tuning import FCVAEHyperModel

    hypermodel = FCVAEHyperModel("quickstart", {"hidden_layers": {"min": 1, "max": 4}})
    tuner = keras_tuner.RandomSearch(hypermodel, objective="val_loss", max_trials=3)
    ```
    """

    def __init__(self, config=None, space=None, train_source=None, name="fc_vae"):
        super().__init__(name=name, tunable=True)
        self.config = load_config(config)
        if self.config["model"].get("type", "fc") != "fc":
            raise KvaeError(f"model.type: the search is for the FC VAE ('fc'), got '{self.config['model']['type']}'")
        self.space = parse_space(space)
        self.train_source = train_source

    def config_for(self, hp):
        """Return the kvae config of one point of the space.

        Args:
            hp: keras_tuner.HyperParameters or dict. Declares the space (an
                `HyperParameters`) or just gives values (a dict).

        Returns:
            A resolved kvae config dict.
        """
        cfg = copy.deepcopy(self.config)
        for name, spec in self.space.items():
            if isinstance(hp, dict):
                if name not in hp:
                    continue
                value = hp[name]
            else:
                value = declare(hp, name, spec)
            section, kind = PARAMETERS[name][:2]
            cfg[section][name] = kind(value)
        return cfg

    def build(self, hp):
        cfg = self.config_for(hp)
        seed_everything(cfg["train"]["seed"], cfg["data"]["frontend"])
        return compile_model(build_model(cfg), cfg)

    def fit(self, hp, model, *args, callbacks=None, verbose=1, trial_folder=None, **kwargs):
        """Train one trial's model; return the best epoch's metrics and `seconds`.

        With `trial_folder` (kvae's tuners pass each trial's own folder) the
        trial trains through the skeleton of `kvae fit` and `kvae prior fit`
        (`kvae.training.fit_in_folder`): `history.csv` and a backup there, so
        a trial cut short resumes from its last epoch when the search is run
        again, and the best epoch is read from all of its epochs. The backup
        is deleted once the trial has ended. A loss that ends NaN is the
        tuner's to record, not an error.
        """
        train = self.config_for(dict(hp.values))["train"]
        logs = [InformationRate()]  # the KL weight's warm-up is the model's (build_model sets it from the config)
        verbose = train["verbose"] if verbose else 0
        start = time.perf_counter()
        if trial_folder is not None:
            folder = RunFolder(trial_folder)
            x = args[0] if args else kwargs.pop("x")
            kwargs.update(zip(("y", "batch_size", "epochs"), args[1:]))
            history = fit_in_folder(model, folder, x, source=self.train_source, before_history=logs,
                                    callbacks=list(callbacks or []), verbose=verbose, **kwargs).history
            history = {k: v for k, v in read_history(folder.history).items() if k != "epoch"} or history
        else:
            x = args[0] if args else kwargs.get("x")
            stack = logs + [keras.callbacks.TerminateOnNaN()]
            if hasattr(x, "set_epoch") or self.train_source is not None:
                stack.insert(0, WindowEpochs(x, self.train_source))
            history = model.fit(*args, callbacks=stack + list(callbacks or []), verbose=verbose, **kwargs).history
        return best_epoch_metrics(history, time.perf_counter() - start)


def best_epoch_metrics(history, seconds):
    """The metrics of the epoch with the lowest finite `val_loss` (NaN when there is none), plus `seconds`.

    Args:
        history: dict. A Keras `History.history`: `{metric: [value per epoch]}`.
        seconds: float. The trial's training time.

    Returns:
        `{metric: value at the best epoch, "best_epoch": 1-based epoch, "seconds": seconds}`,
        or `{"val_loss": nan, "seconds": seconds}` when no epoch has a finite val_loss.
    """
    val = np.asarray(history.get(OBJECTIVE, []), dtype=np.float64)
    finite = np.isfinite(val)
    if not finite.any():
        return {OBJECTIVE: float("nan"), "seconds": float(seconds)}
    best = int(np.argmin(np.where(finite, val, np.inf)))
    out = {}
    for key, values in history.items():
        if best < len(values) and np.isfinite(values[best]):
            out[key] = float(values[best])
    out["best_epoch"] = float(best + 1)
    out["seconds"] = float(seconds)
    return out
