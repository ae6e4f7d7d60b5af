"""Prompt templates: platform base prompts, their versions and labels, tenant overrides, rendering."""
