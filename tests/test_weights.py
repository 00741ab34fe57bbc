"""--weights: a torchvision ImageNet state dict (here: randomly initialised, in torchvision's own key format)."""

import json

import pytest
import torch
import torchvision

from cnr_fast.cli import main
from cnr_fast.errors import UserError
from cnr_fast.models import build_model, model_from_checkpoint
from cnr_fast.models.pretrained import load_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "resnet18.pth"
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_resnet18_body_loaded_head_new_grey_stem_summed(resnet18_file):
    src = torch.load(resnet18_file, weights_only=True)
    model = build_model("resnet18", 10, 1, 16, 1.0, stem="imagenet")
    info = load_pretrained(model, resnet18_file, "resnet18", 1.0)
    own = model.state_dict()
    assert info["adapted"] == ["conv1.weight"]
    torch.testing.assert_close(own["conv1.weight"], src["conv1.weight"].sum(1, keepdim=True))
    for key in ("layer3.1.conv2.weight", "layer4.0.downsample.1.running_var", "bn1.bias"):
        torch.testing.assert_close(own[key], src[key])
    assert own["fc.weight"].shape == (10, 512)  # a new head for the dataset's classes


def test_vit_b16_position_embedding_resized_and_channels_summed(tmp_path):
    path = tmp_path / "vit.pth"
    torch.manual_seed(2)
    src = torchvision.models.vit_b_16().state_dict()
    torch.save(src, path)
    model = build_model("vit_b16", 10, 1, 32, 1.0)
    info = load_pretrained(model, path, "vit_b16", 1.0)
    own = model.state_dict()
    assert set(info["adapted"]) == {"conv_proj.weight", "encoder.pos_embedding"}
    assert own["encoder.pos_embedding"].shape == (1, 5, 768)  # class token + 2x2 patches
    torch.testing.assert_close(own["encoder.pos_embedding"][:, 0], src["encoder.pos_embedding"][:, 0])
    torch.testing.assert_close(own["encoder.layers.encoder_layer_11.mlp.3.weight"],
                               src["encoder.layers.encoder_layer_11.mlp.3.weight"])
    assert own["heads.head.weight"].shape == (10, 768)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 1, 32, 32))).all()


def test_wrong_arch_or_width_is_one_clear_error(resnet18_file):
    with pytest.raises(UserError, match=r"does not fit resnet34 \(missing: layer1.2"):
        load_pretrained(build_model("resnet34", 10, 3, 32, 1.0, stem="imagenet"), resnet18_file, "resnet34", 1.0)
    with pytest.raises(UserError, match="pass --width 1"):
        load_pretrained(build_model("resnet18", 10, 3, 32, 0.5, stem="imagenet"), resnet18_file, "resnet18", 0.5)
    with pytest.raises(UserError, match="does not fit vit_b16"):
        load_pretrained(build_model("vit_b16", 10, 3, 32, 1.0), resnet18_file, "vit_b16", 1.0)


def test_cli_fine_tunes_the_original_from_weights_and_records_it(tmp_path, resnet18_file, capsys):
    out, cache = tmp_path / "m", str(tmp_path / "cache")
    args = ["train", "--out", str(out), "--cache-dir", cache, "--dataset", "digits", "--image-size", "16",
            "--train-epochs", "1", "--width", "1", "--weights", str(resnet18_file), "--quiet"]
    assert main(args) == 0
    ckpt = out / "original.pt"
    model, meta = model_from_checkpoint(ckpt, __import__("cnr_fast.data", fromlist=["x"]).load_dataset(
        __import__("cnr_fast.config", fromlist=["x"]).RunConfig().replace(data={"dataset": "digits",
                                                                                "image_size": 16}).data))
    assert meta["stem"] == "imagenet" and meta["weights_sha256"] and model.stem == "imagenet"
    # the wrong arch is refused before any training, with exit 2 and nothing written
    bad = tmp_path / "bad"
    no_width = [a for i, a in enumerate(args) if a != "--width" and (i == 0 or args[i - 1] != "--width")]
    assert main([*no_width[:2], str(bad), *no_width[3:], "--arch", "vit_tiny"]) == 2
    assert "--weights is for" in capsys.readouterr().err and not bad.exists()
    json.dumps(meta)  # meta stays JSON-serialisable
