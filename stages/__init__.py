"""Stage scripts: run each as `python -m stages.<name> --help`."""
