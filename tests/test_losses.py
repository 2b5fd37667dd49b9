"""The loss library: known reductions, hand-computed values, gradients, stability, errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import FAST, run_cli
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from project.losses.base import class_weights_from_counts
from project.losses.cross_entropy import PolyLoss, WeightedCrossEntropy
from project.losses.focal import FocalLoss, SigmoidFocalLoss
from project.losses.weighted_sum import WeightedSum, weight_at
from project.models.inputs import InputNormalization

REDUCTIONS = ["mean", "sum", "none"]
WEIGHT = [1.0, 2.0, 0.5, 3.0]

# Every (logits, targets) loss, in a form that must equal plain cross-entropy.
CROSS_ENTROPY_FORMS = {
    "focal gamma 0": lambda **kw: FocalLoss(gamma=0.0, **kw),
    "poly epsilon 0": lambda **kw: PolyLoss(epsilon=0.0, **kw),
    "weighted, no weights": lambda **kw: WeightedCrossEntropy(weight=None, **kw),
}

# Every (logits, targets) loss in a typical setting.
LOSSES = {
    "weighted ce": lambda **kw: WeightedCrossEntropy(weight=WEIGHT, label_smoothing=0.1, **kw),
    "label smoothing": lambda **kw: WeightedCrossEntropy(weight=None, label_smoothing=0.2, **kw),
    "focal": lambda **kw: FocalLoss(gamma=2.0, alpha=WEIGHT, **kw),
    "focal gamma 0.5": lambda **kw: FocalLoss(gamma=0.5, **kw),
    "poly": lambda **kw: PolyLoss(epsilon=1.0, **kw),
    "sigmoid focal": lambda **kw: SigmoidFocalLoss(alpha=0.25, gamma=2.0, **kw),
    "sigmoid focal gamma 0.5": lambda **kw: SigmoidFocalLoss(gamma=0.5, **kw),
}


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=generator) * 3
    targets = torch.tensor([0, 1, 2, 3, -100, 1])
    soft = torch.softmax(torch.randn(6, 4, generator=generator), dim=1)
    return logits, targets, soft


# -- reductions to known losses ------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", CROSS_ENTROPY_FORMS)
def test_degenerate_settings_equal_cross_entropy(name, reduction, batch):
    logits, targets, soft = batch
    loss = CROSS_ENTROPY_FORMS[name](reduction=reduction)
    torch.testing.assert_close(
        loss(logits, targets), F.cross_entropy(logits, targets, reduction=reduction)
    )
    torch.testing.assert_close(
        loss(logits, soft), F.cross_entropy(logits, soft, reduction=reduction)
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_weighted_and_smoothed_ce_equal_pytorch_normalisation_included(smoothing, reduction, batch):
    logits, targets, soft = batch
    weight = torch.tensor(WEIGHT)
    expected = F.cross_entropy(
        logits, targets, weight=weight, label_smoothing=smoothing, reduction=reduction
    )
    ours = WeightedCrossEntropy(weight=WEIGHT, label_smoothing=smoothing, reduction=reduction)
    torch.testing.assert_close(ours(logits, targets), expected)
    torch.testing.assert_close(
        ours(logits, soft),
        F.cross_entropy(
            logits, soft, weight=weight, label_smoothing=smoothing, reduction=reduction
        ),
    )
    if reduction == "mean":
        # The normalisation matters: a plain mean of the weighted losses differs.
        naive = F.cross_entropy(logits, targets, weight=weight, reduction="none")[:4].mean()
        assert not torch.allclose(ours(logits, targets), naive)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_focal_gamma_0_with_alpha_equals_weighted_cross_entropy(reduction, batch):
    logits, targets, soft = batch
    loss = FocalLoss(gamma=0.0, alpha=WEIGHT, reduction=reduction)
    weight = torch.tensor(WEIGHT)
    for target in (targets, soft):
        torch.testing.assert_close(
            loss(logits, target),
            F.cross_entropy(logits, target, weight=weight, reduction=reduction),
        )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (None, 2.0), (0.75, 0.5), (0.5, 0.0)])
def test_sigmoid_focal_matches_torchvision(alpha, gamma, reduction, batch):
    logits, _, soft = batch
    labels = (soft > 0.25).float()
    for target in (labels, soft):
        ours = SigmoidFocalLoss(alpha=alpha, gamma=gamma, reduction=reduction)(logits, target)
        theirs = sigmoid_focal_loss(
            logits, target, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction=reduction
        )
        torch.testing.assert_close(ours, theirs)


def test_sigmoid_focal_stays_finite_where_torchvision_s_gradient_is_nan():
    # Why SigmoidFocalLoss does not call torchvision: at a saturated logit with
    # gamma < 1, (1 - p_t) ** gamma has an infinite derivative.
    logits = torch.tensor([[40.0, -40.0]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0]])
    (theirs,) = torch.autograd.grad(sigmoid_focal_loss(logits, labels, gamma=0.5).sum(), logits)
    (ours,) = torch.autograd.grad(SigmoidFocalLoss(gamma=0.5)(logits, labels), logits)
    assert not torch.isfinite(theirs).all()
    assert torch.isfinite(ours).all()


def test_sigmoid_focal_class_indices_are_one_hot_rows(batch):
    logits, targets, _ = batch
    kept = targets != -100
    one_hot = F.one_hot(targets[kept], 4).float()
    expected = sigmoid_focal_loss(logits[kept], one_hot, reduction="mean")
    torch.testing.assert_close(SigmoidFocalLoss()(logits, targets), expected)


# -- hand-computed values ------------------------------------------------------------------

# Logits (0, ln 3) give probabilities (1/4, 3/4); the target is class 1.
HAND_LOGITS = torch.tensor([[0.0, math.log(3.0)]])
HAND_TARGET = torch.tensor([1])


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        (WeightedCrossEntropy(weight=None), -math.log(0.75)),  # 0.28768
        (FocalLoss(gamma=2.0), 0.25**2 * -math.log(0.75)),  # 0.01798
        (PolyLoss(epsilon=1.0), -math.log(0.75) + 0.25),  # 0.53768
        # Smoothed target (0.1, 0.9): -(0.1 ln 1/4 + 0.9 ln 3/4) = 0.39754
        (
            WeightedCrossEntropy(weight=None, label_smoothing=0.2),
            -(0.1 * math.log(0.25) + 0.9 * math.log(0.75)),
        ),
    ],
    ids=["ce", "focal", "poly", "label smoothing"],
)
def test_values_computed_by_hand(loss, expected):
    assert loss(HAND_LOGITS, HAND_TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_class_weights_computed_by_hand():
    # 125 images, 2 classes: n / (C * n_c) = 125/200 and 125/50.
    inverse = class_weights_from_counts([100, 25], "inverse_frequency")
    torch.testing.assert_close(inverse, torch.tensor([0.625, 2.5]))
    # (1 - 0.99) / (1 - 0.99^n): 0.015774 and 0.045007, scaled to sum to 2.
    effective = class_weights_from_counts([100, 25], "effective_number", beta=0.99)
    torch.testing.assert_close(effective, torch.tensor([0.519020, 1.480980]))
    # beta 0 weighs classes equally.
    torch.testing.assert_close(
        class_weights_from_counts([100, 25], "effective_number", beta=0.0), torch.ones(2)
    )


def test_weighted_sum_follows_its_schedule_computed_by_hand():
    assert [weight_at({0: 1.0, 10: 0.0}, e) for e in (0, 5, 10, 20)] == [1.0, 0.5, 0.0, 0.0]
    assert weight_at({2: 0.0, 4: 1.0}, 0) == 0.0
    assert weight_at(0.3, 7) == 0.3
    loss = WeightedSum(
        {"ce": WeightedCrossEntropy(weight=None), "poly": PolyLoss(epsilon=1.0)},
        weights={"ce": {0: 1.0, 10: 0.0}},
    )
    loss.set_epoch(5)
    ce, poly = -math.log(0.75), -math.log(0.75) + 0.25
    assert loss(HAND_LOGITS, HAND_TARGET).item() == pytest.approx(0.5 * ce + poly, rel=1e-6)
    assert loss.last_terms["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert loss.last_terms["poly"].item() == pytest.approx(poly, rel=1e-6)
    assert not loss.last_terms["ce"].requires_grad


# -- gradients -----------------------------------------------------------------------------


@pytest.mark.parametrize("soft_targets", [False, True], ids=["indices", "probabilities"])
@pytest.mark.parametrize("name", LOSSES)
def test_gradcheck_in_float64(name, soft_targets, batch):
    logits, targets, soft = batch
    logits = logits.double().requires_grad_()
    target = soft.double() if soft_targets else targets
    loss = LOSSES[name]()
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (logits,))


# -- stability at extreme logits -----------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", LOSSES)
def test_finite_at_extreme_logits_under_autocast(name, dtype):
    # Row 0: the target's logit is +1e4 (probability exactly 1); row 1: it is
    # -1e4 against +1e4 (a loss of about 2e4); row 2: all equal.
    big = torch.tensor(
        [[1e4, -1e4, -1e4, 0.0], [-1e4, 1e4, 0.0, -1e4], [1e4, 1e4, 1e4, 1e4]],
        requires_grad=True,
    )
    hard = torch.tensor([0, 0, 2])
    soft = torch.tensor([[1.0, 0, 0, 0], [0.5, 0, 0.5, 0], [0.25] * 4])
    with torch.autocast("cpu", dtype=dtype):
        logits = big.to(dtype)
        loss = LOSSES[name]()
        values = [loss(logits, hard), loss(logits, soft)]
    for value in values:
        assert torch.isfinite(value).all(), f"{name}: loss {value}"
        (grad,) = torch.autograd.grad(value, big)
        assert torch.isfinite(grad).all(), f"{name}: gradient {grad}"


# -- ignore_index, reduction, soft targets -------------------------------------------------


@pytest.mark.parametrize("name", CROSS_ENTROPY_FORMS)
def test_ignore_index_like_pytorch(name, batch):
    logits, _, _ = batch
    # A real class index can be the ignored one, as in F.cross_entropy.
    targets = torch.tensor([0, 1, 2, 3, 3, 1])
    for reduction in REDUCTIONS:
        ours = CROSS_ENTROPY_FORMS[name](ignore_index=3, reduction=reduction)
        expected = F.cross_entropy(logits, targets, ignore_index=3, reduction=reduction)
        torch.testing.assert_close(ours(logits, targets), expected)
    all_ignored = torch.full((6,), -100)
    loss = CROSS_ENTROPY_FORMS[name]()
    assert torch.isnan(loss(logits, all_ignored)) and torch.isnan(
        F.cross_entropy(logits, all_ignored)
    )
    assert CROSS_ENTROPY_FORMS[name](reduction="sum")(logits, all_ignored).item() == 0.0


@pytest.mark.parametrize("name", LOSSES)
def test_ignored_targets_add_nothing_and_reductions_agree(name, batch):
    logits, targets, _ = batch
    per_sample = LOSSES[name](reduction="none")(logits, targets)
    assert per_sample.shape[0] == 6
    assert torch.all(per_sample[4] == 0), "the ignored sample contributed"
    total = LOSSES[name](reduction="sum")(logits, targets)
    torch.testing.assert_close(total, per_sample.sum())
    changed = logits.clone()
    changed[4] = torch.randn(4) * 10
    torch.testing.assert_close(LOSSES[name]()(changed, targets), LOSSES[name]()(logits, targets))


@pytest.mark.parametrize("name", LOSSES)
def test_one_hot_probabilities_give_the_class_index_loss(name, batch):
    logits, targets, _ = batch
    kept = targets != -100
    one_hot = F.one_hot(targets[kept], 4).float()
    # Per sample: with class weights, "mean" divides by the summed weight of the
    # targets for indices but by N for probabilities, as F.cross_entropy does.
    loss = LOSSES[name](reduction="none")
    torch.testing.assert_close(loss(logits[kept], one_hot), loss(logits[kept], targets[kept]))


def test_ignore_index_with_probability_targets_is_refused_like_pytorch(batch):
    logits, _, soft = batch
    with pytest.raises(ValueError, match="ignore_index"):
        FocalLoss(ignore_index=0)(logits, soft)
    with pytest.raises(RuntimeError, match="ignore_index"):
        F.cross_entropy(logits, soft, ignore_index=0)


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logits_shape", "targets", "error"),
    [
        ((4, 3), torch.zeros(5, dtype=torch.long), ValueError),  # wrong batch size
        ((4, 3), torch.zeros(4, 3, dtype=torch.long), ValueError),  # one-hot as integers
        ((4, 3), torch.zeros(4), ValueError),  # indices as floats
        ((4, 3), torch.zeros(4, 2), ValueError),  # probabilities over too few classes
        ((12,), torch.zeros(4, dtype=torch.long), ValueError),  # flattened logits
        ((4, 3), torch.zeros(4, dtype=torch.bool), TypeError),
    ],
)
@pytest.mark.parametrize("name", LOSSES)
def test_mismatched_inputs_raise_naming_both_shapes(name, logits_shape, targets, error):
    with pytest.raises(error) as info:
        LOSSES[name]()(torch.randn(logits_shape), targets)
    message = str(info.value)
    assert f"logits {tuple(logits_shape)}" in message
    assert f"targets {tuple(targets.shape)}" in message


def test_bad_settings_are_refused_with_the_value():
    with pytest.raises(ValueError, match="'avg'"):
        FocalLoss(reduction="avg")
    with pytest.raises(ValueError, match="'inverse'"):
        WeightedCrossEntropy(weight="inverse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"classes \[1\] have no training images"):
        WeightedCrossEntropy().set_class_counts([10, 0, 3])
    with pytest.raises(ValueError, match=r"3 class weights for logits of shape \(2, 4\)"):
        WeightedCrossEntropy(weight=[1.0, 2.0, 3.0])(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"weights for \['typo'\]"):
        WeightedSum({"ce": nn.CrossEntropyLoss()}, weights={"typo": 1.0})


def test_computed_weights_need_the_class_counts_first():
    loss = WeightedCrossEntropy(weight="inverse_frequency")
    with pytest.raises(RuntimeError, match="set_class_counts"):
        loss(torch.randn(2, 3), torch.tensor([0, 1]))


# -- class weights in the buffer, the checkpoint and a real run ----------------------------


def test_class_weights_are_a_buffer_saved_and_restored():
    loss = FocalLoss(alpha="inverse_frequency")
    loss.set_class_counts([100, 25])
    assert "class_weight" in dict(loss.named_buffers())
    fresh = FocalLoss(alpha="inverse_frequency")
    fresh.load_state_dict(loss.state_dict())
    torch.testing.assert_close(fresh.class_weight, torch.tensor([0.625, 2.5]))
    assert loss.double().class_weight.dtype == torch.float64  # follows .to() like any buffer


@pytest.mark.slow
def test_training_fills_weights_from_the_data_and_logs_each_term(workdir: Path):
    Path("sum.yaml").write_text(
        """
model:
  init_args:
    loss:
      class_path: project.losses.weighted_sum.WeightedSum
      init_args:
        terms:
          ce: {class_path: torch.nn.CrossEntropyLoss}
          weighted:
            class_path: project.losses.cross_entropy.WeightedCrossEntropy
            init_args: {weight: inverse_frequency}
        weights:
          ce: {0: 1.0, 1: 0.0}
"""
    )
    fast = [arg for arg in FAST if not arg.startswith("--trainer.max_epochs")]
    cli = run_cli(
        "fit",
        "--config=configs/default.yaml",
        "--config=sum.yaml",
        "--trainer.max_epochs=2",
        "--test_after_fit=false",  # keeps the training metrics in callback_metrics
        *fast,
    )
    loss = cli.model.loss
    counts = cli.datamodule.class_counts
    assert len(set(counts)) > 1, counts  # the digits' classes differ in size
    expected = class_weights_from_counts(counts, "inverse_frequency")
    torch.testing.assert_close(loss.terms["weighted"].class_weight, expected)
    assert loss.epoch == 1 and loss.current_weights() == {"ce": 0.0, "weighted": 1.0}
    logged = cli.trainer.callback_metrics
    assert {"train/loss/ce_epoch", "train/loss/weighted_epoch"} <= logged.keys()
    checkpoint = torch.load(cli.trainer.checkpoint_callback.last_model_path, weights_only=True)
    torch.testing.assert_close(
        checkpoint["state_dict"]["loss.terms.weighted.class_weight"], expected
    )


@pytest.mark.slow
def test_the_cli_hands_the_class_counts_and_statistics_to_the_model_and_its_loss(workdir: Path):
    cli = run_cli(
        "fit",
        "--config=configs/default.yaml",
        "--model.init_args.loss=project.losses.cross_entropy.WeightedCrossEntropy",
        *FAST,
    )
    mean, std = cli.datamodule.training_statistics()
    assert cli.model.normalize.values() == InputNormalization(1, mean, std).values()
    # Inverse frequency, n / (C * n_c), from the training split's counts.
    counts = torch.tensor(cli.datamodule.class_counts, dtype=torch.float32)
    expected = counts.sum() / (len(counts) * counts)
    torch.testing.assert_close(cli.model.loss.class_weight, expected)
