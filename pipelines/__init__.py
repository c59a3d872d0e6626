"""Thin entry points: parse options, wire transforms and models, run."""
