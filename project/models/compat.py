"""Whether a checkpoint fits the model the config builds, said before any weight is copied."""

from __future__ import annotations

from typing import Any

from project.exceptions import InputValueError


def check_fits(model: Any, checkpoint: dict[str, Any], source: str) -> None:
    """Refuses a checkpoint made for other classes or another network, naming both sides.

    Called before an ``ImageClassifier``'s weights are copied, so the user reads
    this instead of a list of tensor size mismatches.
    """
    saved = checkpoint.get("hyper_parameters", {})
    count, names = saved.get("num_classes"), saved.get("class_names")
    if (count is not None and count != model.num_classes) or (
        names is not None and list(names) != list(model.class_names)
    ):
        raise InputValueError(
            f"{source} was trained on {count} classes {names}, but the data has "
            f"{model.num_classes} classes {model.class_names}; give the data it was "
            "trained on (data.classes selects classes by name)"
        )
    theirs = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items() if k[:4] == "net."}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if k[:4] == "net."}
    if theirs != ours:
        difference = _network_difference(theirs, ours, saved.get("net"), model.hparams.get("net"))
        raise InputValueError(
            f"{source} holds another network than the config builds: {difference}; "
            "use the config it was trained with (config.yaml in its run's log folder)"
        )


def _network_difference(
    theirs: dict[str, tuple[int, ...]], ours: dict[str, tuple[int, ...]], saved: Any, built: Any
) -> str:
    """The first difference between two networks' parameter shapes, and their settings."""
    settings = ""
    if isinstance(saved, dict) and isinstance(built, dict):
        old, new = saved.get("init_args", {}), built.get("init_args", {})
        changed = [k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
        if saved.get("class_path") != built.get("class_path"):
            settings = f"{saved.get('class_path')} there, {built.get('class_path')} here; "
        elif changed:
            settings = "".join(f"{k} {old.get(k)} there, {new.get(k)} here; " for k in changed)
    shared = [k for k in ours if k in theirs and ours[k] != theirs[k]]
    if shared:
        key = shared[0]
        return f"{settings}{key} is {list(theirs[key])} there, {list(ours[key])} here"
    missing, extra = sorted(ours.keys() - theirs.keys()), sorted(theirs.keys() - ours.keys())
    if missing:
        return f"{settings}it lacks {len(missing)} of this network's tensors ({missing[0]}, ...)"
    return f"{settings}it has {len(extra)} tensors this network lacks ({extra[0]}, ...)"
