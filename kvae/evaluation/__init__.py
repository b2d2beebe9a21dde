"""kvae.evaluation: judging models. Numpy/scipy metrics (`metrics`), `kvae evaluate` (`evaluate`), figures
(`plots`), the listening page of `kvae gallery` (`gallery`).

Import the submodules directly (`from kvae.evaluation import metrics`);
nothing here is imported by `kvae.models` or `kvae.losses`.
"""
