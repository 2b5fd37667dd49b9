"""Networks: the CNNs trained from scratch; the metrics of ImageClassifier."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from project.models import ConvNet


@pytest.mark.parametrize("size", [8, 28, 32])
def test_convnet_gives_one_logit_per_class_at_any_image_size(size: int):
    assert ConvNet(num_classes=7)(torch.randn(2, 3, size, size)).shape == (2, 7)


@pytest.mark.parametrize("pooled_size", [1, 2])
def test_convnet_pooled_to_a_grid_tells_where_a_shape_is(pooled_size: int):
    """The same square in two places: one logit vector with global pooling, two with a grid."""
    net = ConvNet(
        num_classes=3, in_channels=1, widths=(8, 16), convs_per_stage=1, pooled_size=pooled_size
    ).eval()
    images = torch.zeros(2, 1, 96, 96)
    images[0, :, 24:28, 24:28] = 1.0
    images[1, :, 56:60, 56:60] = 1.0  # 32 px further: the same pooling alignment
    with torch.no_grad():
        logits = net(images)
    assert net.classifier.in_features == 16 * pooled_size**2
    assert torch.allclose(logits[0], logits[1], atol=1e-6) == (pooled_size == 1)
    with pytest.raises(ValueError, match="pooled_size 0 must be at least 1"):
        ConvNet(num_classes=3, pooled_size=0)


def test_convnet_grid_the_size_of_its_features_gives_the_pooled_answer():
    """28x28 images reach a 7x7 map: a 7x7 grid skips the pass and answers the same."""
    net = ConvNet(
        num_classes=3, in_channels=1, widths=(8, 16, 32), convs_per_stage=1, pooled_size=7
    ).eval()
    images = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        features = net.features(images)
        pooled = net.classifier(net.pool(features).flatten(1))
        logits = net(images)
    assert features.shape[-2:] == (7, 7)
    assert torch.equal(logits, pooled)
    with torch.no_grad():  # another image size still goes through the grid
        assert net(torch.rand(2, 1, 40, 40)).shape == (2, 3)


def test_no_convolution_has_a_bias_in_front_of_batch_norm():
    convs = [m for m in ConvNet(num_classes=3).modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(conv.bias is None for conv in convs)
    plain = ConvNet(num_classes=3, batch_norm=False)
    assert all(m.bias is not None for m in plain.modules() if isinstance(m, nn.Conv2d))


# -- torchvision models ----------------------------------------------------------------


@pytest.mark.slow
def test_epoch_metrics_count_every_batch_exactly_once(tmp_path):
    """Training metrics are fed in chunks of steps; an epoch's value must cover its own batches.

    37 batches (two full chunks and a partial one) through a network that does
    not learn (learning rate 0) but is changed between the two epochs: every
    logged accuracy must equal the accuracy of the second epoch's network on the
    whole split, with nothing left over from the first epoch.
    """
    import lightning.pytorch as L
    from torch.utils.data import DataLoader, TensorDataset

    from project.models import ImageClassifier
    from project.models.classifier import TRAIN_METRIC_CHUNK

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(37 * 4, 3, 2, 2, generator=generator)
    targets = torch.randint(0, 3, (len(images),), generator=generator)
    assert len(images) // 4 % TRAIN_METRIC_CHUNK != 0
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))

    def accuracy() -> torch.Tensor:
        with torch.no_grad():
            return (net(images).argmax(dim=1) == targets).float().mean()

    first = accuracy()

    class SwapClasses(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                with torch.no_grad():
                    net[1].weight.copy_(net[1].weight.roll(1, dims=0))
                    net[1].bias.copy_(net[1].bias.roll(1))

    model = ImageClassifier(
        net,
        num_classes=3,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.0),
        channels=images.shape[1],
        mean=[0.0] * images.shape[1],  # the images are given as they should reach the net
        std=[1.0] * images.shape[1],
    )
    loader = DataLoader(TensorDataset(images, targets), batch_size=4)
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SwapClasses()],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, loader, loader)
    expected = accuracy()
    assert not torch.isclose(expected, first)  # the two epochs really differ
    metrics = trainer.callback_metrics
    assert torch.isclose(metrics["train/acc"], expected)
    assert torch.isclose(metrics["val/acc"], expected)
    trainer.test(model, loader, verbose=False)
    assert torch.isclose(trainer.callback_metrics["test/acc"], expected)
