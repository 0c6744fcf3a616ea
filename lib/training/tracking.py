"""Experiment trackers: `train.report_to` names any of the Trainer's integrations.

`tensorboard` (the default) writes to run_<run>/tensorboard/ as before; any other integration the
Trainer knows (`wandb`, `mlflow`, `trackio`, `comet_ml`, ...) is handed to it through
TrainingArguments.report_to, with the run name as the tracker's run name. The run's resolved
config rides on the model config, which every integration logs with the run (keys in one
namespaced entry), so a tracker shows the preset values beside the Trainer's arguments. Keys and
tokens stay in the environment (WANDB_API_KEY, HF_TOKEN, ...): nothing here reads or writes them.
Offline trackers (`WANDB_MODE=offline`, MLflow's file store) work on nodes without internet.
"""

from __future__ import annotations

from dataclasses import dataclass

from lib.errors import InputError

TENSORBOARD = "tensorboard"
CONFIG_ENTRY = "gsm8k_toolkit"  # the model-config key the resolved config is logged under
# The pip package of an integration, where it differs from its name.
PACKAGES = {"azure_ml": "azureml-core", "comet_ml": "comet-ml", "neptune": "neptune", "flyte": "flytekit",
            "kubeflow": "kubeflow-training"}


def check_trackers(names: list[str]) -> list[str]:
    """The integrations besides TensorBoard to hand to the Trainer; an unknown or uninstalled
    one is an InputError naming it (and its package), raised before any model loads."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    unknown = [name for name in names if name not in INTEGRATION_TO_CALLBACK]
    if unknown:
        raise InputError(f"train.report_to: unknown tracker {unknown[0]!r} (the Trainer's integrations:"
                         f" {', '.join(sorted(INTEGRATION_TO_CALLBACK))})")
    available = set(get_available_reporting_integrations())
    missing = [name for name in names if name not in available]
    if missing:
        package = PACKAGES.get(missing[0], missing[0])
        raise InputError(f"train.report_to: {missing[0]} is not installed here (pip install {package} in .venv,"
                         f" or remove it from train.report_to)")
    return [name for name in dict.fromkeys(names) if name != TENSORBOARD]


def attach_run_config(model, run: str, resolved: dict) -> None:
    """Put the run's name and resolved config on the model config, where the integrations read
    what they log with the run (the adapter files do not carry the base model's config)."""
    model.config.update({CONFIG_ENTRY: {"run": run, **resolved}})


@dataclass(frozen=True)
class Tracking:
    """Where a training run's curves go: TensorBoard into the run folder and/or the Trainer's
    integrations, under the run's name, with its resolved config."""

    run_name: str
    tensorboard: bool
    trackers: tuple[str, ...]  # the integrations besides TensorBoard, checked to be installed
    run_config: dict  # the run's resolved config record (config_resolved.json)

    @classmethod
    def checked(cls, run_name: str, report_to: list[str], run_config: dict) -> Tracking:
        return cls(run_name, TENSORBOARD in report_to, tuple(check_trackers(report_to)), run_config)
