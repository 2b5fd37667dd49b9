"""The one door: ``python -m project <fit|validate|test|predict> --config configs/<x>.yaml``."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from project.callbacks.checkpointing import RunDirectoryError, check_writable, claim_log_versions
from project.callbacks.linking import LinkDataToModel
from project.callbacks.progress import progress_bar_for
from project.checkpoints import (
    CheckpointError,
    check_import_paths,
    class_paths,
    read_checkpoint,
    run_checkpoint,
)
from project.data import ImageDataModule
from project.errors import ProjectArgumentParser, constructor_error
from project.models import ImageClassifier

# What every run shares (trainer, logger, checkpoints, the safety callbacks),
# read before the --config files for every subcommand.
BASE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"


class ProjectCLI(LightningCLI):
    """LightningCLI that links the data's facts into the model and reports each run."""

    def __init__(
        self,
        *positional: Any,
        args: ArgsType = None,
        parser_kwargs: dict[str, Any] | None = None,
        run: bool = True,
        **kwargs: Any,
    ) -> None:
        given = sys.argv[1:] if args is None else args
        # What the parsers must serve, known before they are built (see subcommands).
        self._command_line = list(given) if isinstance(given, (list, tuple)) else None
        parser_kwargs = dict(parser_kwargs or {})
        base = {"default_config_files": [str(BASE_CONFIG)]} if BASE_CONFIG.is_file() else {}
        for name in self.subcommands() if run else ():
            parser_kwargs[name] = {**base, **parser_kwargs.get(name, {})}
        if not run:
            parser_kwargs = {**base, **parser_kwargs}
        super().__init__(*positional, args=args, parser_kwargs=parser_kwargs, run=run, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:
        """Lightning's subcommands; only the one named first on the command line, if any.

        Each subcommand's parser resolves the signatures of the model, the data,
        the Trainer and every class they accept (about 0.07 s each on a small
        CPU), and a command runs one of them. A command line that does not start
        with a subcommand (a config file naming it, arguments given as a dict)
        gets them all, as LightningCLI builds them.
        """
        every = LightningCLI.subcommands()
        first = self._command_line[0] if self._command_line else None
        return {first: every[first]} if first in every else every

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data knows the classes and channels; the model and its network are
        # told, so no config writes these numbers.
        for target in ("model.init_args.num_classes", "model.init_args.net.init_args.num_classes"):
            parser.link_arguments("data.num_classes", target, apply_on="instantiate")
        for target in ("model.init_args.channels", "model.init_args.net.init_args.in_channels"):
            parser.link_arguments("data.channels", target, apply_on="instantiate")
        parser.link_arguments(
            "data.class_names", "model.init_args.class_names", apply_on="instantiate"
        )

    def _prepare_subcommand_parser(
        self, klass: type, subcommand: str, **kwargs
    ) -> LightningArgumentParser:
        if self._command_line in (["--help"], ["-h"]):
            # The list of subcommands shows their names and descriptions, not their options.
            return self.init_parser(**kwargs)
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "fit":
            parser.add_argument(
                "--test_after_fit",
                type=bool,
                default=True,
                help="Evaluate the best checkpoint on the test split when fit ends.",
            )
        return parser

    def before_instantiate_classes(self) -> None:
        """Names the run's log folder after the experiment when the logger leaves it to us.

        ``name: null`` (as ``configs/base.yaml`` has it) becomes the stem of the
        last ``--config`` file outside a ``presets`` folder, so runs of
        ``configs/experiments/longtail-focal.yaml`` go to ``logs/longtail-focal/``.
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = config.get("trainer", {}).get("logger")
        if not isinstance(logger, Namespace) or "name" not in (logger.get("init_args") or {}):
            return
        if logger.init_args.name is None:
            files = [Path(str(f)) for f in config.get("config") or []]
            stems = [f.stem for f in files if "presets" not in f.parent.parts]
            logger.init_args.name = stems[-1] if stems else "lightning_logs"

    def instantiate_classes(self) -> None:
        # jsonargparse wraps what a constructor raises (a missing data root, a bad
        # fraction) in its type-search report; show the constructor's own message.
        try:
            super().instantiate_classes()
        except ValueError as error:
            original, owner = constructor_error(error)
            if original is error:
                raise
            if not isinstance(original, (ValueError, OSError)):
                raise original from None
            where = f"{owner}: " if owner else ""
            self.parser.error(f"{where}{original}")
        # Pretrained weights were trained at a size: the data crops to it unless told otherwise.
        sizes = getattr(self.model, "input_preprocessing", None)
        if sizes and hasattr(self.datamodule, "use_input_size"):
            self.datamodule.use_input_size(sizes.get("crop_size"), sizes.get("resize_size"))

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Adds :class:`LinkDataToModel` and the progress display that suits the output.

        The display is Rich in a terminal, plain lines in logs; a progress bar the
        config names itself, or ``enable_progress_bar: false``, is left alone.
        """
        config = self._get(self.config_init, "trainer", default={})
        callbacks = kwargs.get("callbacks", config.get("callbacks")) or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        if not any(isinstance(c, LinkDataToModel) for c in callbacks):
            # First: callbacks that copy the model at setup (EMA) copy its statistics.
            callbacks.insert(0, LinkDataToModel())
        wanted = {**config, **kwargs}.get("enable_progress_bar") is not False
        if wanted and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(progress_bar_for())
        kwargs["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)

    # -- checkpoints from earlier runs -------------------------------------------------

    def _resolve_ckpt_path(self) -> None:
        """Maps ``--ckpt_path best|last`` to the newest earlier run's file in a new process.

        Lightning resolves these names only for checkpoints written by the
        current process; from the command line they mean the latest run of this
        experiment (``<save_dir>/<name>/version_*/checkpoints``).
        """
        config = self.config_init[self.subcommand]
        which = config.get("ckpt_path")
        if which not in ("best", "last") or self._fitted_here():
            return
        logger = self.trainer.logger
        if logger is None or logger.save_dir is None:
            raise FileNotFoundError("--ckpt_path best/last needs a logger; pass a checkpoint file")
        runs = Path(logger.save_dir) / (logger.name or "")
        config["ckpt_path"] = str(run_checkpoint(runs, which, "ckpt_path"))
        self._check_checkpoint(config["ckpt_path"])

    def _fitted_here(self) -> bool:
        return any(
            callback.best_model_path or callback.last_model_path
            for callback in self.trainer.checkpoint_callbacks
            if isinstance(callback, ModelCheckpoint)
        )

    def _parse_ckpt_path(self) -> None:
        """Checks a ``--ckpt_path`` file before anything is built; never takes settings from it.

        LightningCLI would merge the checkpoint's saved settings into the config
        here, importing and building the classes they name before any check, and
        then run something other than the config the user reads. Here the model
        is the one the config describes and the checkpoint gives its weights; a
        model the checkpoint does not fit is refused with both sides named
        (``ImageClassifier.on_load_checkpoint``).
        """
        if self.config.get("subcommand"):
            self._check_checkpoint(self.config[self.config.subcommand].get("ckpt_path"))

    def _check_checkpoint(self, path: str | None) -> None:
        """Refuses, in one line, a checkpoint that holds code or names untrusted classes.

        Classes are trusted when the config names them or they are under
        :data:`project.checkpoints.TRUSTED_PACKAGES`. ``best``, ``last`` and
        remote paths are checked once :meth:`_resolve_ckpt_path` has found the file.
        """
        if not path or "://" in str(path) or not Path(path).is_file():
            return
        try:
            checkpoint = read_checkpoint(path, "ckpt_path", mmap=True)
            own = class_paths(self.config[self.config.subcommand].as_dict())
            check_import_paths(checkpoint, path, "ckpt_path", config_classes=own)
        except CheckpointError as error:
            self.parser.error(str(error))

    def _prepare_run(self) -> None:
        """Before any subcommand: safe loading, the checkpoint to use, a log folder of its own."""
        config = self.config_init[self.subcommand]
        # Lightning leaves weights_only to torch's default, and to False for URLs:
        # a checkpoint is data, never code.
        if config.get("weights_only") is None:
            config["weights_only"] = True
        try:
            self._resolve_ckpt_path()
        except CheckpointError as error:
            self.parser.error(str(error))
        if rank_zero_only.rank == 0:
            try:
                claim_log_versions(self.trainer.loggers)
            except RunDirectoryError as error:
                self.parser.error(str(error))

    def before_fit(self) -> None:
        self._prepare_run()
        try:
            self._check_run_folders()
        except RunDirectoryError as error:
            self.parser.error(str(error))

    def _check_run_folders(self) -> None:
        """Fails now, not after the first epoch, when logs or checkpoints cannot be written."""
        if rank_zero_only.rank != 0:
            return
        for callback in self.trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
                check_writable(callback.dirpath, "checkpoints", "the ModelCheckpoint's dirpath")
        if self.trainer.logger is None:
            root = self.trainer.default_root_dir
            check_writable(root, "checkpoints", "trainer.default_root_dir")
        elif self.trainer.logger.log_dir is not None:
            check_writable(self.trainer.logger.log_dir, "logs", "trainer.logger.init_args.save_dir")

    def before_validate(self) -> None:
        self._prepare_run()

    def before_test(self) -> None:
        self._prepare_run()

    def before_predict(self) -> None:
        self._prepare_run()

    # -- the end of fit ----------------------------------------------------------------

    def after_fit(self) -> None:
        if self.trainer.interrupted or not self.config[self.subcommand].get("test_after_fit"):
            return
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None else ""
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
        self._print_summary(results[0] if results else {}, best)

    def _print_summary(self, metrics: dict[str, float], best: str) -> None:
        log_dir = self.trainer.log_dir
        logs_root = Path(log_dir).parent if log_dir else Path("logs")
        lines = [
            "",
            "Summary",
            f"  test accuracy   {metrics.get('test/acc', float('nan')):.4f}",
            f"  test macro F1   {metrics.get('test/f1', float('nan')):.4f}",
            f"  best checkpoint {best or '(none: no ModelCheckpoint monitored a metric)'}",
            f"  logs            {log_dir}",
            f"  tensorboard     tensorboard --logdir {logs_root}",
        ]
        # The run's result, not a log record: stdout, whatever logging is set to.
        if self.trainer.is_global_zero:
            print("\n".join(lines), flush=True)


def main(args: ArgsType = None, run: bool = True, prog: str = "python -m project") -> ProjectCLI:
    """Runs the CLI on ``args`` (a list of strings or a dict), or on ``sys.argv`` when ``None``.

    With ``run=False`` nothing runs: ``args`` hold no subcommand (``["--config",
    "configs/default.yaml"]``) and the returned CLI carries the ``model``,
    ``datamodule`` and ``trainer`` that ``fit`` would get, built from the same
    YAML, for notebooks and scripts that drive them themselves.
    """
    try:
        with warnings.catch_warnings():
            if args is not None:
                # Lightning warns when Python passes ``args`` while sys.argv holds
                # a script's own options (a notebook kernel's, a tool's): intended here.
                warnings.filterwarnings("ignore", "LightningCLI's args parameter")
            return ProjectCLI(
                ImageClassifier,
                ImageDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                auto_configure_optimizers=False,
                parser_class=ProjectArgumentParser,
                parser_kwargs={"prog": prog},
                args=args,
                run=run,
            )
    except SIGTERMException:
        # Lightning ends a run on SIGTERM with this exception and status 0 (outside
        # fit, where SaveOnInterrupt handles it); a scheduler must see it failed.
        raise SystemExit(143) from None
