"""The DINOv2 extractor offline: the registry and assets entries, the error that names what is
missing, and the loading path (torch.hub from a local source folder, weights from a file) with a
stand-in network, checking torch-fidelity's preprocessing."""

from __future__ import annotations

import textwrap

import pytest
import torch

from gen_bench import assets
from gen_bench.metrics.dinov2 import DinoV2NotFound, require_dinov2
from gen_bench.metrics.extractors import EXTRACTORS, ExtractorRequest, build_extractor
from gen_bench.metrics.settings import EvalSettings

HUBCONF = textwrap.dedent('''
    import torch
    from torch import nn

    class Stand_in(nn.Module):
        """Records its input; the class token is a linear map of the channel means."""
        embed_dim = 6

        def __init__(self):
            super().__init__()
            self.head = nn.Linear(3, 6)

        def forward(self, x):
            self.seen = x
            return self.head(x.mean((2, 3)))

    def dinov2_vits14(pretrained=True, **kwargs):
        assert not pretrained
        return Stand_in()
''')


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torch's hub cache: empty
    monkeypatch.delenv("GEN_BENCH_ASSETS", raising=False)
    return tmp_path


def test_registered_with_an_asset_entry():
    assert "dinov2" in EXTRACTORS
    a = assets.ASSETS["dinov2_vits14"]
    assert a.url == "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth"
    assert a.filename == "dinov2_vits14_pretrain.pth" and a.sha256_prefix == ""  # recorded on first fetch


def test_missing_weights_or_source_is_one_error_naming_them(offline):
    with pytest.raises(DinoV2NotFound) as e:
        require_dinov2(EvalSettings(extractor="dinov2"))
    msg = str(e.value)
    assert "dinov2_vits14_pretrain.pth" in msg and assets.ASSETS["dinov2_vits14"].url in msg
    assert "eval.dinov2.weights=PATH" in msg and "eval.dinov2.code_dir=DIR" in msg
    assert str(offline / "torch" / "hub" / "checkpoints" / "dinov2_vits14_pretrain.pth") in msg
    weights = offline / "w.pth"
    weights.write_bytes(b"x")
    with pytest.raises(DinoV2NotFound) as e:  # weights given: only the source is asked for
        require_dinov2(EvalSettings(dinov2={"weights": str(weights)}))
    assert "hubconf.py" in str(e.value) and "weights file" not in str(e.value)
    with pytest.raises(ValueError, match="unknown eval.dinov2.model 'vit_s'; valid: vits14"):
        require_dinov2(EvalSettings(dinov2={"model": "vit_s"}))


def test_loads_the_network_from_local_source_and_weights(offline):
    code = offline / "dinov2"
    code.mkdir()
    (code / "hubconf.py").write_text(HUBCONF)
    net = torch.hub.load(str(code), "dinov2_vits14", source="local", pretrained=False)
    with torch.no_grad():
        net.head.weight.copy_(torch.arange(18.0).view(6, 3))
    torch.save(net.state_dict(), offline / "dinov2_vits14_pretrain.pth")
    s = EvalSettings(assets_dir=str(offline), dinov2={"code_dir": str(code)})
    spec = type("Spec", (), {"kind": "image", "shape": (1, 8, 8)})()
    ext = build_extractor("dinov2", ExtractorRequest(spec, None, s))
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    feats = ext(x)["pool"]
    assert feats.shape == (3, 6) and ext.feature_dim == 6
    seen = ext.net.seen  # uint8-rounded, grey to RGB, 224 x 224, ImageNet-normalised
    assert seen.shape == (3, 3, 224, 224)
    mean, std = torch.tensor([0.485, 0.456, 0.406]) * 255, torch.tensor([0.229, 0.224, 0.225]) * 255
    pixels = seen * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)
    assert torch.allclose(pixels[:, 0], pixels[:, 1], atol=1e-3)  # grey repeated
    const = ext(torch.full((1, 1, 8, 8), 0.5))["pool"]  # a flat image stays flat through the resize
    assert torch.allclose(ext.net.seen * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1),
                          torch.full((1, 3, 224, 224), 128.0), atol=1e-3)
    assert const.shape == (1, 6) and ext.describe()["model"] == "dinov2_vits14"
    assert ext.describe()["weights_sha256"] == assets.sha256_of(offline / "dinov2_vits14_pretrain.pth")
