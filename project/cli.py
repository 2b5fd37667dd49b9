"""The one door: ``python -m project <fit|validate|test|predict> --config configs/<x>.yaml``."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from project.callbacks import PredictionWriter
from project.data import ImageDataModule
from project.models import ImageClassifier


class ProjectCLI(LightningCLI):
    """LightningCLI that links the data's facts into the model and reports each run."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data knows the classes and channels; the model and its network are
        # told, so no config writes these numbers.
        for target in ("model.init_args.num_classes", "model.init_args.net.init_args.num_classes"):
            parser.link_arguments("data.num_classes", target, apply_on="instantiate")
        parser.link_arguments(
            "data.channels", "model.init_args.net.init_args.in_channels", apply_on="instantiate"
        )
        parser.link_arguments(
            "data.class_names", "model.init_args.class_names", apply_on="instantiate"
        )

    def _prepare_subcommand_parser(
        self, klass: type, subcommand: str, **kwargs
    ) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "fit":
            parser.add_argument(
                "--test_after_fit",
                type=bool,
                default=True,
                help="Evaluate the best checkpoint on the test split when fit ends.",
            )
        return parser

    # -- checkpoints from earlier runs -------------------------------------------------

    def _resolve_ckpt_path(self) -> None:
        """Maps ``--ckpt_path best|last`` to the newest earlier run's file in a new process.

        Lightning resolves these names only for checkpoints written by the
        current process; from the command line they mean the latest run of this
        experiment (``<save_dir>/<name>/version_*/checkpoints``).
        """
        config = self.config_init[self.subcommand]
        name = config.get("ckpt_path")
        if name not in ("best", "last") or self._fitted_here():
            return
        last = self._latest_last_checkpoint()
        if name == "last":
            config["ckpt_path"] = str(last)
            return
        state = torch.load(last, map_location="cpu", weights_only=True)
        best = next(
            (
                value.get("best_model_path")
                for key, value in state.get("callbacks", {}).items()
                if key.startswith("ModelCheckpoint") and value.get("best_model_path")
            ),
            None,
        )
        if not best or not Path(best).is_file():
            raise FileNotFoundError(
                f"{last} names no best checkpoint that still exists ({best!r}); "
                "pass --ckpt_path with a file path"
            )
        config["ckpt_path"] = best

    def _fitted_here(self) -> bool:
        return any(
            callback.best_model_path or callback.last_model_path
            for callback in self.trainer.checkpoint_callbacks
            if isinstance(callback, ModelCheckpoint)
        )

    def _latest_last_checkpoint(self) -> Path:
        logger = self.trainer.logger
        if logger is None or logger.save_dir is None:
            raise FileNotFoundError("--ckpt_path best/last needs a logger; pass a checkpoint file")
        runs = Path(logger.save_dir) / (logger.name or "")
        candidates = sorted(runs.glob("*/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise FileNotFoundError(
                f"no earlier run of this config has a last checkpoint: looked for "
                f"{runs}/*/checkpoints/last.ckpt; train first or pass --ckpt_path FILE"
            )
        return candidates[-1]

    def before_fit(self) -> None:
        self._resolve_ckpt_path()

    def before_validate(self) -> None:
        self._resolve_ckpt_path()

    def before_test(self) -> None:
        self._resolve_ckpt_path()

    def before_predict(self) -> None:
        self._resolve_ckpt_path()
        if not any(isinstance(c, PredictionWriter) for c in self.trainer.callbacks):
            self.trainer.callbacks.append(PredictionWriter())

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
        rank_zero_info("\n".join(lines))


def main(args: ArgsType = None) -> ProjectCLI:
    """Runs the CLI on ``args`` (a list of strings or a dict), or on ``sys.argv`` when ``None``."""
    return ProjectCLI(
        ImageClassifier,
        ImageDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        args=args,
    )
