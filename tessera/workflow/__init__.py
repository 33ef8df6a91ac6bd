"""Workflows: the engine that runs a graph of actions per event, and the actions themselves."""
