"""The one door: ``python -m project <fit|validate|test|predict> --config configs/<x>.yaml``."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch import Trainer
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from project.callbacks.checkpointing import (
    RunDirectoryError,
    check_run_folders,
    claim_log_versions,
)
from project.callbacks.linking import LinkDataToModel
from project.data import ImageDataModule
from project.errors import ProjectArgumentParser, device_error
from project.exceptions import InputValueError
from project.models import ImageClassifier

# Lightning 2.6 asks torch's deprecated LeafSpec on every batch: a FutureWarning that is
# not the user's to act on (pyproject.toml pins lightning<2.7, where it is raised).
warnings.filterwarnings(
    "ignore",
    message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    category=FutureWarning,
    module=r"lightning\.pytorch\.utilities\._pytree",
)

# Lightning advertises its cloud services (litlogger, litmodels) at the start of every run.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not str(record.msg).startswith("💡 Tip:")
)

# What every run shares (trainer, logger, checkpoints, the safety callbacks),
# read before the --config files for every subcommand.
BASE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"


class ProjectCLI(LightningCLI):
    """LightningCLI with ``configs/base.yaml`` under every run and the data's facts linked into
    the model; checkpoints are read as data, and ``fit`` ends with a test and a summary."""

    def __init__(
        self,
        *positional: Any,
        args: ArgsType = None,
        parser_kwargs: dict[str, Any] | None = None,
        run: bool = True,
        **kwargs: Any,
    ) -> None:
        given = sys.argv[1:] if args is None else args
        self._command_line = list(given) if isinstance(given, (list, tuple)) else None
        base = {"default_config_files": [str(BASE_CONFIG)]}  # a missing file is skipped
        parser_kwargs = {**({} if run else base), **(parser_kwargs or {})}
        # The subcommand's parser reports a config file's YAML error: it needs the files.
        shared = {**base, "command_line": parser_kwargs.get("command_line", ())}
        for name in self.subcommands() if run else ():
            parser_kwargs[name] = {**shared, **parser_kwargs.get(name, {})}
        super().__init__(*positional, args=args, parser_kwargs=parser_kwargs, run=run, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:
        """Only the subcommand named first, if any: each parser resolves every signature.

        ``export`` is there while its leaf, ``project/export.py``, is.
        """
        every = LightningCLI.subcommands()
        if offers_export(self._command_line, run=True) and exporter() is not None:
            every["export"] = {"model", "datamodule"}
        first = self._command_line[0] if self._command_line else None
        return {first: every[first]} if first in every else every

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data knows the classes and channels; no config writes these numbers.
        for target in ("model.init_args.num_classes", "model.init_args.net.init_args.num_classes"):
            parser.link_arguments("data.num_classes", target, apply_on="instantiate")
        for target in ("model.init_args.channels", "model.init_args.net.init_args.in_channels"):
            parser.link_arguments("data.channels", target, apply_on="instantiate")
        parser.link_arguments(
            "data.class_names", "model.init_args.class_names", apply_on="instantiate"
        )

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "fit":
            help = "Test the best checkpoint (base.yaml: the final weights) when fit ends."
            parser.add_argument("--test_after_fit", type=bool, default=True, help=help)
        return parser

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        name_loggers_after_the_experiment(config)
        if problem := device_error(config.get("trainer", {})):
            self.parser.error(problem)  # before any data is read
        take_launcher_layout(config.get("trainer", {}))

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as error:
            from project.parser_messages import instantiation_error

            self.parser.error(instantiation_error(error))  # re-raises what is no input error
        # Pretrained weights were trained at a size: the data crops to it unless told otherwise.
        sizes = getattr(self.model, "input_preprocessing", None)
        if sizes and hasattr(self.datamodule, "use_input_size"):
            self.datamodule.use_input_size(sizes.get("crop_size"), sizes.get("resize_size"))

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Puts :class:`LinkDataToModel` first: a config's plain ``callbacks:`` list keeps it."""
        config = self._get(self.config_init, "trainer", default={})
        callbacks = kwargs.get("callbacks", config.get("callbacks")) or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        if not any(isinstance(c, LinkDataToModel) for c in callbacks):
            callbacks.insert(0, LinkDataToModel())  # before callbacks that copy the model (EMA)
        return super().instantiate_trainer(**{**kwargs, "callbacks": callbacks})

    def _parse_ckpt_path(self) -> None:
        # LightningCLI would build what the checkpoint's saved settings name before
        # any check, and run those instead of the config. Here the config builds the
        # model, the checkpoint gives its weights, once it has passed the check.
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and path not in ("best", "last"):  # those are found once the logger exists
            # A run folder stands for its newest run's best checkpoint.
            self.config[subcommand]["ckpt_path"] = self._checked_ckpt_path()

    def _checked_ckpt_path(self, runs: Path | None = None) -> str | None:
        return checked_checkpoint(self.config[self.config.subcommand], self.parser, runs)

    def _prepare_run(self) -> None:
        """Safe loading, the checkpoint that best/last mean, and a log folder of its own."""
        config = self.config_init[self.subcommand]
        if config.get("weights_only") is None:
            config["weights_only"] = True  # a checkpoint is data, never code
        if config.get("ckpt_path") in ("best", "last"):  # the newest run of this experiment
            logger = self.trainer.logger
            runs = Path(logger.save_dir, logger.name or "") if logger and logger.save_dir else None
            config["ckpt_path"] = self._checked_ckpt_path(runs)
        try:
            if rank_zero_only.rank == 0 and self.subcommand != "export":  # it writes no logs
                claim_log_versions(self.trainer.loggers)
                if self.subcommand == "fit":
                    check_run_folders(self.trainer)
        except RunDirectoryError as error:
            self.parser.error(str(error))

    before_fit = before_validate = before_test = before_predict = before_export = _prepare_run

    def after_fit(self) -> None:
        if self.trainer.interrupted or not self.config[self.subcommand].get("test_after_fit"):
            return
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None else ""
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
        log_dir = self.trainer.log_dir  # a broadcast in a distributed run: every rank asks
        if self.trainer.is_global_zero:
            # The run's result: stdout, whatever logging is set to.
            print(summary(results[0] if results else {}, best, log_dir), flush=True)


def name_loggers_after_the_experiment(config: Namespace) -> None:
    """A logger's ``name: null`` (base.yaml's) becomes the experiment's file name.

    The experiment is the last ``--config`` outside ``presets/``, so a run of
    ``longtail-focal.yaml`` logs to ``logs/longtail-focal/version_N``. W&B groups runs by
    ``project`` and MLflow by ``experiment_name``: those are named, where null.
    """
    files = [Path(str(f)) for f in config.get("config") or []]
    stems = [f.stem for f in files if "presets" not in f.parent.parts]
    experiment = stems[-1] if stems else "lightning_logs"
    loggers = config.get("trainer", {}).get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        settings = (logger.get("init_args") if isinstance(logger, Namespace) else None) or {}
        key = next((k for k in ("project", "experiment_name", "name") if k in settings), None)
        if key is not None and settings[key] is None:
            settings[key] = experiment


def checked_checkpoint(config: Namespace, parser: Any, runs: Path | None = None) -> str | None:
    """The checkpoint file (best/last: in ``runs``), refused in one line if it holds code."""
    from project.checkpoints import CheckpointError, checked_ckpt_path, class_paths

    try:
        return checked_ckpt_path(config.get("ckpt_path"), class_paths(config.as_dict()), runs)
    except (CheckpointError, FileNotFoundError) as error:
        parser.error(str(error))
        return None  # parser.error exits


def take_launcher_layout(trainer: Any) -> None:
    """Under torchrun or SLURM, ``trainer.devices: auto`` means the launcher's processes per
    node and ``trainer.num_nodes`` its node count, so one preset fits every launch.

    Lightning's TorchElasticEnvironment and SLURMEnvironment require both to match
    the launch (``configs/presets/torchrun.yaml``, ``slurm.yaml``).
    """
    if str(trainer.get("devices", "auto")) != "auto":
        return
    env = os.environ
    if TorchElasticEnvironment.detect() and env.get("LOCAL_WORLD_SIZE") and env.get("WORLD_SIZE"):
        trainer["devices"] = int(env["LOCAL_WORLD_SIZE"])
        trainer["num_nodes"] = int(env["WORLD_SIZE"]) // int(env["LOCAL_WORLD_SIZE"])
    elif SLURMEnvironment.detect() and env.get("SLURM_NTASKS_PER_NODE", "").isdigit():
        trainer["devices"] = int(env["SLURM_NTASKS_PER_NODE"])
        trainer["num_nodes"] = int(env.get("SLURM_NNODES", "1"))


def summary(metrics: dict[str, float], best: str, log_dir: str | None) -> str:
    """The lines ``fit`` ends with: test figures, the best checkpoint, where the logs are."""
    return "\n".join(
        [
            "",
            "Summary",
            f"  test accuracy   {metrics.get('test/acc', float('nan')):.4f}",
            f"  test macro F1   {metrics.get('test/f1', float('nan')):.4f}",
            f"  best checkpoint {best or '(none: no ModelCheckpoint monitored a metric)'}",
            f"  logs            {log_dir}",
            f"  tensorboard     tensorboard --logdir {Path(log_dir).parent if log_dir else 'logs'}",
        ]
    )


def offers_export(args: Any, run: bool) -> bool:
    """Whether a run of ``args`` needs the export subcommand: ``export`` itself, or the list of
    subcommands (``--help``, no arguments); not another subcommand, nor a ``run=False`` build."""
    first = args[0] if isinstance(args, (list, tuple)) and args else None
    return run and first in ("export", "-h", "--help", None)


def exporter() -> type[Trainer] | None:
    """The Trainer with an ``export`` method (``project.export``); None once that leaf is gone."""
    if importlib.util.find_spec("project.export") is None:
        return None
    from project.export import ExportTrainer

    return ExportTrainer


def main(args: ArgsType = None, run: bool = True, prog: str = "python -m project") -> ProjectCLI:
    """Runs the CLI on ``args`` (a list of strings or a dict), or on ``sys.argv`` when ``None``.

    With ``run=False`` nothing runs: ``args`` hold no subcommand (``["--config",
    "configs/default.yaml"]``) and the returned CLI carries the ``model``,
    ``datamodule`` and ``trainer`` that ``fit`` would get, built from the same
    YAML, for notebooks and scripts that drive them themselves.
    """
    given = sys.argv[1:] if args is None else args
    try:
        with warnings.catch_warnings():
            if args is not None:
                # Lightning warns when Python passes ``args`` while sys.argv holds
                # a script's own options (a notebook kernel's, a tool's): intended here.
                warnings.filterwarnings("ignore", "LightningCLI's args parameter")
            cli = ProjectCLI(
                ImageClassifier,
                ImageDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                # Lightning's Trainer for fit, validate, test and predict; one that can
                # also export when the command is export or --help.
                trainer_class=(exporter() or Trainer) if offers_export(given, run) else Trainer,
                auto_configure_optimizers=False,
                parser_class=ProjectArgumentParser,
                parser_kwargs={
                    "prog": prog,
                    "command_line": given if isinstance(given, (list, tuple)) else (),
                },
                args=args,
                run=run,
            )
        if run and torch.distributed.is_available() and torch.distributed.is_initialized():
            # Ended here, not by the interpreter's exit: gloo's threads torn down at exit
            # after another node has gone abort the process ("terminate called ...").
            torch.distributed.destroy_process_group()
        return cli
    except SIGTERMException:
        # Lightning ends a run on SIGTERM with this exception and status 0 (outside
        # fit, where SaveOnInterrupt handles it); a scheduler must see it failed.
        raise SystemExit(143) from None
    except UnicodeDecodeError:
        from project.parser_messages import config_files, undecodable_file

        if problem := undecodable_file(
            config_files(given if isinstance(given, (list, tuple)) else [])
        ):
            raise InputValueError(problem) from None
        raise
