"""Gaze policies returning the gaze dict AutoGaze returns.

autogaze, uniform, random, frame-difference, run-length, motion-vectors.
"""
