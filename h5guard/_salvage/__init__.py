"""Salvage of crashed runs that wrote without h5guard.

* :mod:`~h5guard._salvage.api`: :func:`~h5guard.salvage` and its reports;
* :mod:`~h5guard._salvage.child`: what runs in the sandbox child (reading a damaged file).
"""
