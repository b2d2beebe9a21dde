"""Deprecated since kvae 0.2: this old name is the module `kvae.inference.prior_data`."""

from kvae._deprecated import alias

alias(__name__, "kvae.inference.prior_data")
