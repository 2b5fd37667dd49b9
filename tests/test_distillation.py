"""Knowledge distillation: a student trained against a frozen teacher from a checkpoint."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import FAST, experiment, run_cli
from crafted import assert_names, assert_nothing_ran, craft
from fakes import train_digits_0to4, write_template_checkpoint
from test_model_inputs import assert_a_checkpoint_predicts_alone
from torch import nn

from project.checkpoints import CheckpointError
from project.losses.distillation import DistillationLoss
from project.models import ConvNet
from project.models.distillation import DistillationClassifier

TEACHER_NET = {"class_path": "project.models.ConvNet", "init_args": {"widths": [8, 16]}}
DIGITS = [str(d) for d in range(10)]


@pytest.fixture
def teacher_checkpoint(tmp_path: Path) -> Path:
    return write_template_checkpoint(tmp_path / "teacher.ckpt", TEACHER_NET, DIGITS, [0.3], [0.4])


def student(checkpoint: Path, **kwargs) -> DistillationClassifier:
    net = ConvNet(10, in_channels=1, widths=[4, 8], dropout=0.0)
    return DistillationClassifier(net, 10, str(checkpoint), class_names=DIGITS, **kwargs)


def test_the_teacher_is_rebuilt_from_its_checkpoint_and_frozen(teacher_checkpoint: Path):
    saved = torch.load(teacher_checkpoint, weights_only=True)["state_dict"]
    model = student(teacher_checkpoint)
    normalize, teacher = model.teacher
    assert isinstance(teacher, ConvNet)
    assert torch.equal(teacher.features[0].weight, saved["net.features.0.weight"])
    assert not any(p.requires_grad for p in model.teacher.parameters())
    model.train()
    assert not model.teacher.training  # batch norm and dropout in inference mode
    # Only the student is optimized.
    optimized = {id(p) for group in model.parameter_groups() for p in group["params"]}
    assert optimized == {id(p) for p in model.net.parameters()}
    # The teacher standardizes the images as its own training data was; the student
    # learns from this data's statistics.
    assert normalize.extra_repr() == "mean=[0.3], std=[0.4]"
    assert not model.normalize.is_set


def test_the_loss_receives_the_teacher_s_logits(teacher_checkpoint: Path):
    twin = ConvNet(10, in_channels=1, widths=[8, 16])
    twin.load_state_dict(
        {
            k.removeprefix("net."): v
            for k, v in torch.load(teacher_checkpoint, weights_only=True)["state_dict"].items()
            if k.startswith("net.")
        }
    )
    model = DistillationClassifier(
        twin,
        10,
        str(teacher_checkpoint),
        DistillationLoss(temperature=2.0, alpha=1.0),
        mean=[0.3],
        std=[0.4],
    ).eval()
    images, targets = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    # A student identical to the teacher has nothing left to learn from it.
    _, loss, _ = model.model_step((images, targets))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    model.net.classifier.bias.data += torch.linspace(-1, 1, 10)
    assert model.model_step((images, targets))[1].item() > 0.01


def test_a_teacher_net_given_in_yaml_gets_the_checkpoint_weights(teacher_checkpoint: Path):
    given = ConvNet(10, in_channels=1, widths=[8, 16])
    model = student(teacher_checkpoint, teacher_net=given)
    assert model.teacher[1] is given  # after the teacher's own normalization
    with pytest.raises(ValueError, match=r"teacher\.ckpt does not fit the teacher network"):
        student(teacher_checkpoint, teacher_net=ConvNet(10, in_channels=1, widths=[8, 32]))


def test_wrong_classes_losses_and_checkpoints_are_refused(tmp_path: Path, teacher_checkpoint):
    with pytest.raises(ValueError, match=r"trained on classes \['0', '1'"):
        DistillationClassifier(ConvNet(3, 1), 3, str(teacher_checkpoint), class_names=list("abc"))
    with pytest.raises(TypeError, match="student_logits, targets, teacher_logits"):
        student(teacher_checkpoint, loss=nn.CrossEntropyLoss())
    # A checkpoint names its network's class; only trusted classes are built.
    hostile = torch.load(teacher_checkpoint, weights_only=True)
    hostile["hyper_parameters"]["net"] = {"class_path": "os.system", "init_args": {"command": ""}}
    torch.save(hostile, tmp_path / "hostile.ckpt")
    with pytest.raises(ValueError, match=r"hyper_parameters\.net\.class_path names 'os\.system'"):
        student(tmp_path / "hostile.ckpt")
    # A trusted module, but no network class.
    hostile["hyper_parameters"]["net"] = {"class_path": "torch.nn.functional.relu"}
    torch.save(hostile, tmp_path / "hostile.ckpt")
    with pytest.raises(ValueError, match=r"'torch\.nn\.functional\.relu' is not an nn\.Module"):
        student(tmp_path / "hostile.ckpt")


@pytest.mark.slow
def test_a_student_learns_from_the_teacher_alone_and_saves_only_itself(
    workdir: Path, tmp_path_factory: pytest.TempPathFactory, digits_tree: Path
):
    teacher = train_digits_0to4(tmp_path_factory.getbasetemp() / "digits-0to4", digits_tree)
    before = torch.load(teacher, weights_only=True)["state_dict"]
    cli = run_cli(
        "fit",
        *experiment("digits-distillation"),
        f"--model.init_args.teacher_checkpoint={teacher}",
        '--data.init_args.classes=["0", "1", "2", "3", "4"]',
        "--model.init_args.loss.init_args.alpha=1.0",  # the labels are not used at all
        *FAST,
        "--trainer.max_epochs=6",
        "--trainer.limit_train_batches=1.0",
        "--trainer.limit_val_batches=1.0",
        "--trainer.limit_test_batches=1.0",
    )
    # Five classes: chance is 0.2. The test ran on the best checkpoint, reloaded.
    assert cli.trainer.callback_metrics["test/acc"] > 0.8
    after = cli.model.teacher[1].state_dict()
    assert all(torch.equal(before[f"net.{k}"], v) for k, v in after.items())
    best = torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert not [k for k in best["state_dict"] if k.startswith("teacher.")]


# -- the loss ----------------------------------------------------------------------------


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=generator) * 3
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    return logits, targets, torch.softmax(torch.randn(6, 4, generator=generator), dim=1)


def test_distillation_at_temperature_1_and_alpha_1_is_the_kl_of_softmaxes(batch):
    student, targets, _ = batch
    teacher = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    expected = F.kl_div(
        F.log_softmax(student, dim=1), F.softmax(teacher, dim=1), reduction="batchmean"
    )
    loss = DistillationLoss(temperature=1.0, alpha=1.0)
    torch.testing.assert_close(loss(student, targets, teacher), expected)


def test_distillation_value_computed_by_hand():
    # Teacher (ln 9, 0) at T=2 gives (3/4, 1/4); the student is uniform.
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.130812, times T^2 = 0.523248;
    # the hard term is ln 2 for class 0. Half and half: 0.608198.
    loss = DistillationLoss(temperature=2.0, alpha=0.5)
    value = loss(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([[math.log(9.0), 0.0]]))
    assert value.item() == pytest.approx(0.608198, abs=1e-6)
    assert loss.last_terms["soft"].item() == pytest.approx(0.523248, abs=1e-6)
    assert loss.last_terms["hard"].item() == pytest.approx(math.log(2), abs=1e-6)


def test_distillation_gradcheck_and_no_gradient_to_the_teacher(batch):
    student, targets, _ = batch
    student = student.double().requires_grad_()
    teacher = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    loss = DistillationLoss(temperature=3.0, alpha=0.7, hard_loss=nn.CrossEntropyLoss())
    assert torch.autograd.gradcheck(lambda s: loss(s, targets, teacher), (student,))
    loss(student, targets, teacher).backward()
    assert teacher.grad is None


def test_distillation_names_both_shapes_on_mismatch():
    with pytest.raises(ValueError, match=re.escape("student (4, 3), teacher (4, 5)")):
        DistillationLoss()(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), torch.randn(4, 5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_loss_is_finite_at_extreme_logits_under_autocast(dtype):
    big = torch.tensor(
        [[1e4, -1e4, -1e4, 0.0], [-1e4, 1e4, 0.0, -1e4], [1e4, 1e4, 1e4, 1e4]],
        requires_grad=True,
    )
    with torch.autocast("cpu", dtype=dtype):
        logits = big.to(dtype)
        value = DistillationLoss(temperature=2.0)(logits, torch.tensor([0, 0, 2]), logits.flip(0))
    assert torch.isfinite(value).all()
    (grad,) = torch.autograd.grad(value, big)
    assert torch.isfinite(grad).all()


def test_the_teacher_builds_nothing_a_checkpoint_names(trained: Path, probe: Path, tmp_path: Path):
    student = ConvNet(10, in_channels=1, widths=[8, 16])
    crafted = craft(trained, "net", probe, tmp_path / "crafted.ckpt")
    with pytest.raises(CheckpointError) as error:
        DistillationClassifier(student, 10, str(crafted))
    assert "teacher_checkpoint" in str(error.value)
    assert_names(str(error.value), crafted, "net")
    pickled = craft(trained, "pickled", probe, tmp_path / "pickled.ckpt")
    with pytest.raises(CheckpointError) as error:
        DistillationClassifier(student, 10, str(pickled))
    assert_names(str(error.value), pickled, "pickled")
    assert_nothing_ran(probe)


@pytest.mark.slow
def test_a_student_checkpoint_predicts_alone(
    workdir: Path, digits_tree: Path, tmp_path_factory: pytest.TempPathFactory
):
    teacher = train_digits_0to4(tmp_path_factory.getbasetemp() / "digits-0to4", digits_tree)
    config = [
        *experiment("digits-distillation"),
        f"--model.init_args.teacher_checkpoint={teacher}",
        '--data.init_args.classes=["0", "1", "2", "3", "4"]',
    ]
    kind = "project.models.distillation.DistillationClassifier"
    assert_a_checkpoint_predicts_alone(kind, config, workdir)
