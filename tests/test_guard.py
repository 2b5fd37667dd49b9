"""The offline guard itself: a test that tried to download would fail, not hang or pass."""

import socket

import pytest
from conftest import NetworkAccessError


def test_connection_to_the_internet_is_blocked():
    with pytest.raises(NetworkAccessError, match="offline"):
        socket.create_connection(("192.0.2.1", 443), timeout=1)


def test_torchvision_weight_download_fails_offline():
    from torchvision.models import ResNet18_Weights

    with pytest.raises(NetworkAccessError, match=r"download\.pytorch\.org"):
        ResNet18_Weights.DEFAULT.get_state_dict(progress=False)
