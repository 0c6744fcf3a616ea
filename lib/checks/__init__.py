"""Checks of the toolkit on other machines: the GPU check's parts and the small models it carries."""
