"""Figures drawn with matplotlib's Agg canvas directly (no pyplot), no Lightning.

- :mod:`lightning_embviz.figures.audio`: the spectrogram gallery of audio clips.
"""
