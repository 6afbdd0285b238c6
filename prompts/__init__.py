"""Prompt files, shipped as package data ``graph_distill.prompts``."""
