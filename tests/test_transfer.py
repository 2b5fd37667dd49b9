"""Transfer learning: pretrained weights offline, freezing, learning rates, staged unfreezing."""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from crafted import CRAFTED, assert_loader_refuses, assert_names, assert_nothing_ran, craft
from fakes import write_template_checkpoint, write_torchvision_weights
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn

from project.callbacks import LinkDataToModel
from project.callbacks.finetuning import StagedUnfreeze
from project.checkpoints import CheckpointError
from project.data import DigitsDataModule
from project.models import ConvNet, ImageClassifier
from project.models.backbones import TorchvisionNet, find_head
from project.models.transfer import TransferClassifier

IMAGENET_MEAN = [0.485, 0.456, 0.406]
DIGITS_NET = {"class_path": "project.models.ConvNet", "init_args": {"widths": [8, 16]}}


class Pickled:
    """Anything that is not a tensor: loading it would run pickled code."""


# -- pretrained weights ----------------------------------------------------------------


def test_weights_by_name_load_offline_from_torch_home():
    file = write_torchvision_weights("mobilenet_v3_small", "DEFAULT")
    assert file.parent == Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    saved = torch.load(file, weights_only=True)
    net = TorchvisionNet("mobilenet_v3_small", num_classes=4, weights="DEFAULT")
    loaded = net.body.state_dict()
    assert torch.equal(loaded["features.0.0.weight"], saved["features.0.0.weight"])
    assert loaded["classifier.3.weight"].shape == (4, 1024)  # a new head for 4 classes
    assert net.input_preprocessing == {
        "mean": IMAGENET_MEAN,
        "std": [0.229, 0.224, 0.225],
        "resize_size": 256,
        "crop_size": 224,
        "channels": 3,
    }


def test_missing_weights_offline_name_the_file_and_the_folder():
    expected = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(FileNotFoundError) as error:
        TorchvisionNet("resnet18", num_classes=3, weights="IMAGENET1K_V1")
    message = str(error.value)
    assert str(expected) in message and "$TORCH_HOME/hub/checkpoints/" in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message


def test_weights_files_holding_pickled_code_are_refused(tmp_path: Path):
    file = write_torchvision_weights("mobilenet_v3_small", "DEFAULT")
    torch.save({"features.0.0.weight": Pickled()}, file)
    with pytest.raises(RuntimeError, match=r"small-047dcff4\.pth.*could not be loaded"):
        TorchvisionNet("mobilenet_v3_small", num_classes=4, weights="DEFAULT")
    local = tmp_path / "weights.pth"
    torch.save({"features.0.0.weight": Pickled()}, local)
    with pytest.raises(ValueError, match=r"weights\.pth"):
        TorchvisionNet("mobilenet_v3_small", num_classes=4, weights=str(local))


def test_a_local_weights_file_keeps_the_metadata_of_its_download_name(tmp_path: Path):
    cached = write_torchvision_weights("mobilenet_v3_small", "DEFAULT")
    renamed = tmp_path / "my-weights.pth"
    renamed.write_bytes(cached.read_bytes())
    cached.unlink()  # nothing left in TORCH_HOME: the files below are what loads
    same_name = tmp_path / cached.name
    same_name.write_bytes(renamed.read_bytes())
    assert TorchvisionNet("mobilenet_v3_small", 4, weights=str(same_name)).input_preprocessing
    assert TorchvisionNet("mobilenet_v3_small", 4, weights=str(renamed)).input_preprocessing is None


# -- what trains -----------------------------------------------------------------------


def digits(root: Path, **kwargs) -> DigitsDataModule:
    return DigitsDataModule(root=str(root), num_workers=0, cache=True, batch_size=64, **kwargs)


def fast_trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 1,
        "limit_train_batches": 3,
        "limit_val_batches": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(tmp_path),
    }
    kwargs["callbacks"] = [LinkDataToModel(), *kwargs.get("callbacks", [])]
    return L.Trainer(**{**options, **kwargs})


@pytest.mark.slow
def test_feature_extraction_trains_the_head_only_and_keeps_batch_norm_statistics(
    tmp_path: Path, digits_tree: Path
):
    model = TransferClassifier(ConvNet(10, in_channels=1), 10, trainable="head")
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    fast_trainer(tmp_path).fit(model, digits(digits_tree))
    after = model.net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # The head learned; no backbone weight and no batch-norm statistic moved.
    assert changed == {"classifier.weight", "classifier.bias"}
    model.train()
    assert not model.net.features[1].training  # a frozen batch norm stays in eval mode
    assert model.net.dropout.training  # the head's dropout still works


def test_partial_fine_tuning_freezes_the_stages_before_the_named_one():
    model = TransferClassifier(ConvNet(10, in_channels=1), 10, trainable="features.7")
    trainable = {name for name, p in model.net.named_parameters() if p.requires_grad}
    assert "features.0.weight" not in trainable and "features.1.weight" not in trainable
    assert {"features.7.weight", "features.11.bias", "classifier.weight"} <= trainable
    with pytest.raises(ValueError, match=r"'layer4' is not a stage.*features\.0"):
        TransferClassifier(ConvNet(10, in_channels=1), 10, trainable="layer4")


def test_torchvision_stage_names_are_the_model_s_own():
    with torch.device("meta"):
        model = TransferClassifier(TorchvisionNet("resnet18", 5), 5, trainable="layer4")
    frozen = [n for n, p in model.net.body.named_parameters() if not p.requires_grad]
    assert frozen[0] == "conv1.weight" and frozen[-1].startswith("layer3.")
    assert model.net.body.layer4[0].conv1.weight.requires_grad


@pytest.mark.parametrize(
    "schedule",
    [
        lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=20),
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20),
    ],
    ids=["one-cycle", "cosine"],
)
def test_the_backbone_learns_at_a_fixed_fraction_of_the_head_rate_all_schedule_long(schedule):
    model = TransferClassifier(
        ConvNet(10, in_channels=1),
        10,
        optimizer=lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.05),
        scheduler=schedule,
        backbone_lr_factor=0.1,
    )
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    head, head_no_decay, backbone, backbone_no_decay = optimizer.param_groups
    assert {id(p) for p in head["params"]} == {id(model.net.classifier.weight)}
    # Norm weights and biases get no weight decay, in the head as in the backbone.
    assert head_no_decay["weight_decay"] == backbone_no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 1 for p in backbone_no_decay["params"])
    for _ in range(15):
        optimizer.step()
        scheduler.step()
        assert backbone["lr"] == pytest.approx(0.1 * head["lr"])
        assert backbone_no_decay["lr"] == pytest.approx(0.1 * head["lr"])


# -- staged unfreezing -----------------------------------------------------------------


class BackboneWatch(Callback):
    """Records, per epoch, whether a backbone weight changed and the learning rates."""

    def __init__(self) -> None:
        self.changed: dict[int, bool] = {}
        self.lr_ratio: dict[int, float] = {}
        self.start: torch.Tensor | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = pl_module.net.features[0].weight.detach().clone()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        weight = pl_module.net.features[0].weight
        self.changed[trainer.current_epoch] = not torch.equal(self.start, weight)
        groups = trainer.optimizers[0].param_groups
        self.lr_ratio[trainer.current_epoch] = groups[2]["lr"] / groups[0]["lr"]


def staged_run(tmp_path: Path, digits_tree: Path, max_epochs: int, ckpt_path: str | None):
    watch = BackboneWatch()
    trainer = fast_trainer(
        tmp_path,
        max_epochs=max_epochs,
        enable_checkpointing=True,
        callbacks=[
            StagedUnfreeze({1: "all"}),
            ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True),
            watch,
        ],
    )
    torch.manual_seed(0)
    model = TransferClassifier(
        ConvNet(10, in_channels=1, widths=[8, 16]), 10, trainable="head", backbone_lr_factor=0.5
    )
    trainer.fit(model, digits(digits_tree), ckpt_path=ckpt_path)
    return watch, model


@pytest.mark.slow
def test_staged_unfreezing_continues_after_a_resume_past_the_unfreeze_epoch(
    tmp_path: Path, digits_tree: Path
):
    first, _ = staged_run(tmp_path, digits_tree, max_epochs=2, ckpt_path=None)
    assert first.changed == {0: False, 1: True}  # frozen, then unfrozen at epoch 1
    last = tmp_path / "checkpoints" / "last.ckpt"
    resumed, model = staged_run(tmp_path, digits_tree, max_epochs=3, ckpt_path=str(last))
    # A resumed run starts frozen again (the model is rebuilt); the callback must
    # unfreeze from the epoch, not only at the milestone itself.
    assert resumed.changed == {2: True}
    assert resumed.lr_ratio[2] == pytest.approx(0.5)
    assert all(p.requires_grad for p in model.net.parameters())
    model.train()
    assert model.net.features[1].training  # unfrozen batch norm trains again


@pytest.mark.slow
def test_staged_unfreezing_rejects_schedules_that_freeze_again_and_plain_models(
    tmp_path: Path, digits_tree: Path
):
    model = TransferClassifier(ConvNet(10, in_channels=1), 10, trainable="head")
    trainer = fast_trainer(tmp_path, callbacks=[StagedUnfreeze({1: "all", 2: "features.7"})])
    with pytest.raises(ValueError, match=r"epoch 2 trains from 'features.7'.*freezes again"):
        trainer.fit(model, digits(digits_tree))
    plain = ImageClassifier(ConvNet(10, in_channels=1), 10)
    trainer = fast_trainer(tmp_path, callbacks=[StagedUnfreeze({1: "all"})])
    with pytest.raises(TypeError, match="TransferClassifier"):
        trainer.fit(plain, digits(digits_tree))


@pytest.mark.slow
def test_staged_unfreezing_works_with_the_speed_presets(tmp_path: Path, digits_tree: Path):
    # Two leaves together: without the speed callbacks there is nothing to combine.
    speed = pytest.importorskip("project.callbacks.speed")
    compiled = speed.TorchCompile(backend="eager")
    callbacks = [StagedUnfreeze({1: "all"}), speed.ChannelsLast(), compiled]
    model = TransferClassifier(ConvNet(10, in_channels=1, widths=[8, 16]), 10, trainable="head")
    trainer = fast_trainer(tmp_path, max_epochs=2, callbacks=callbacks)
    trainer.fit(model, digits(digits_tree))
    assert trainer.state.finished and all(p.requires_grad for p in model.parameters())
    assert model.net.features[0].weight.is_contiguous(memory_format=torch.channels_last)


# -- starting from a checkpoint of this template ---------------------------------------


def test_init_from_a_template_checkpoint_loads_all_but_a_new_head(tmp_path: Path):
    classes = [str(d) for d in range(5)]
    path = write_template_checkpoint(tmp_path / "a.ckpt", DIGITS_NET, classes, [0.3], [0.4])
    saved = torch.load(path, weights_only=True)["state_dict"]
    new_classes = TransferClassifier(
        ConvNet(3, in_channels=1, widths=[8, 16]), 3, init_from=str(path)
    )
    assert torch.equal(new_classes.net.features[0].weight, saved["net.features.0.weight"])
    assert new_classes.net.classifier.out_features == 3
    same = TransferClassifier(
        ConvNet(5, in_channels=1, widths=[8, 16]), 5, class_names=classes, init_from=str(path)
    )
    assert torch.equal(same.net.classifier.weight, saved["net.classifier.weight"])
    # The model standardizes its inputs as the pretrained network's were, unless told otherwise.
    assert new_classes.normalize.extra_repr() == "mean=[0.3], std=[0.4]"
    given = TransferClassifier(
        ConvNet(3, in_channels=1, widths=[8, 16]), 3, init_from=str(path), mean=[0.5], std=[0.2]
    )
    assert given.normalize.extra_repr() == "mean=[0.5], std=[0.2]"
    with pytest.raises(ValueError, match=r"a\.ckpt is not a ConvNet like net"):
        TransferClassifier(ConvNet(3, in_channels=1, widths=[8, 32]), 3, init_from=str(path))
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        TransferClassifier(ConvNet(3), 3, init_from=str(tmp_path / "missing.ckpt"))


# -- the proof on real data ------------------------------------------------------------


# -- a checkpoint is data ------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_the_transfer_loader_refuses_a_crafted_checkpoint(
    case: str, trained: Path, probe: Path, tmp_path: Path
):
    assert_loader_refuses(TransferClassifier, case, trained, probe, tmp_path)


def test_init_from_builds_nothing_a_checkpoint_names(trained: Path, probe: Path, tmp_path: Path):
    # init_from takes only weights and class names: nothing in its settings is built.
    crafted = craft(trained, "net", probe, tmp_path / "crafted.ckpt")
    net = ConvNet(10, in_channels=1, widths=[32, 64], pooled_size=4)  # as configs/default.yaml
    model = TransferClassifier(net, 10, init_from=str(crafted))
    saved = torch.load(trained, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.net.features[0].weight, saved["net.features.0.weight"])
    assert_nothing_ran(probe)
    pickled = craft(trained, "pickled", probe, tmp_path / "pickled.ckpt")
    with pytest.raises(CheckpointError) as error:
        TransferClassifier(net, 10, init_from=str(pickled))
    assert_names(str(error.value), pickled, "pickled")
    assert_nothing_ran(probe)


# -- torchvision networks ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "head", "size"),
    [
        ("resnet50", "fc", 224),
        ("efficientnet_b0", "classifier.1", 224),
        ("mobilenet_v3_large", "classifier.3", 224),
        ("convnext_tiny", "classifier.2", 224),
        ("vit_b_16", "heads.head", 224),
        ("squeezenet1_1", "classifier.1", 224),
        ("inception_v3", "fc", 299),
    ],
)
def test_any_torchvision_head_is_replaced_for_the_class_count(name: str, head: str, size: int):
    # The meta device builds shapes without memory or time.
    with torch.device("meta"):
        net = TorchvisionNet(name, num_classes=7)
        net.train()  # inception returns (logits, aux logits) in training
        logits = net(torch.zeros(2, 3, size, size))
    assert logits.shape == (2, 7)
    assert find_head(net.body)[0] == head


def test_head_dropout_is_added_on_request():
    with torch.device("meta"):
        net = TorchvisionNet("resnet18", num_classes=4, dropout=0.3)
    assert isinstance(net.body.fc[0], nn.Dropout) and net.body.fc[0].p == 0.3
    assert net.body.fc[1].out_features == 4


def test_grayscale_input_sums_the_pretrained_rgb_filters(tmp_path):
    torch.manual_seed(0)
    source = TorchvisionNet("resnet18", num_classes=1000)
    file = tmp_path / "resnet18.pth"
    torch.save(source.body.state_dict(), file)
    rgb = TorchvisionNet("resnet18", num_classes=5, weights=str(file)).eval()
    gray = TorchvisionNet("resnet18", num_classes=5, in_channels=1, weights=str(file)).eval()
    rgb.body.fc = gray.body.fc = nn.Identity()
    image = torch.randn(2, 1, 64, 64)
    # The adapted network sees a gray image as the RGB one sees it repeated 3 times.
    assert torch.allclose(gray(image), rgb(image.expand(-1, 3, -1, -1)), atol=1e-5)


def test_unknown_model_names_get_suggestions():
    with pytest.raises(ValueError, match="did you mean resnet50"):
        TorchvisionNet("resnet_50", num_classes=3)
    with pytest.raises(ValueError, match=r"IMAGENET1K_V1.*IMAGENET1K_V2"):
        TorchvisionNet("resnet50", num_classes=3, weights="IMAGENET22K")


def test_pretrained_weights_bring_their_own_statistics():
    weights = write_torchvision_weights("mobilenet_v3_small")
    model = ImageClassifier(TorchvisionNet("mobilenet_v3_small", 4, weights=str(weights)), 4)
    assert model.normalize.extra_repr() == "mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]"
    given = TorchvisionNet("mobilenet_v3_small", 4, weights=str(weights))
    assert ImageClassifier(given, 4, mean=[0.5] * 3, std=[0.5] * 3).normalize.extra_repr() == (
        "mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]"
    )
