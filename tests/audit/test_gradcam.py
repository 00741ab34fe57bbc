import numpy as np
import pytest
import torch

from cnr_fast.audit.gradcam import gradcam
from cnr_fast.data import to_float
from cnr_fast.models import LogitMask, build_model


def _x(n=3):
    g = torch.Generator().manual_seed(0)
    return to_float(torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8))


@pytest.mark.parametrize("tap,layer", [("L3", "layer3"), ("L4", "layer4")])
def test_gradcam_matches_pytorch_grad_cam(tap, layer, tiny_resnet):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    m = tiny_resnet()
    x = _x()
    targets = [2, 2, 5]
    ours = gradcam(m, x, tap, torch.tensor(targets)).numpy()
    with pgc.GradCAM(model=m, target_layers=[getattr(m, layer)]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    assert ours.shape == ref.shape == (3, 28, 28)
    np.testing.assert_allclose(ours, ref, atol=2e-2)


def test_gradcam_logit_mask_is_zero_not_nan(tiny_resnet):
    m = LogitMask(tiny_resnet(), [2])
    cam = gradcam(m, _x(2), "L4", 2)
    assert torch.isfinite(cam).all() and float(cam.abs().max()) == 0.0


def test_gradcam_vit_token_grid(tiny_resnet):
    vit = build_model("vit_tiny", 10, 1, 28, 1.0).eval()
    head = [m for m in vit.modules() if isinstance(m, torch.nn.Linear)][-1]
    torch.manual_seed(0)
    torch.nn.init.normal_(head.weight, std=0.5)  # torchvision zero-initialises the head: all-zero maps else
    cam = gradcam(vit, _x(2), "L3", 1)
    assert cam.shape == (2, 28, 28) and torch.isfinite(cam).all()
    assert float(cam.max()) <= 1.0 + 1e-6 and float(cam.min()) >= 0.0
    assert float(cam.amax(dim=(1, 2)).min()) > 0.5  # a real map on each example, not the zero map


def test_reaches_map_finds_the_taps_a_gradcam_figure_can_draw(tiny_resnet):
    """A ViT whose head reads the class token: its last block's patch tokens get no gradient (every map there
    would be blank), the block before does; a CNN's deepest maps do."""
    from cnr_fast.audit.gradcam import reaches_map

    vit = build_model("vit_tiny", 10, 1, 28, 1.0).eval()
    head = [m for m in vit.modules() if isinstance(m, torch.nn.Linear)][-1]
    torch.manual_seed(0)
    torch.nn.init.normal_(head.weight, std=0.5)
    assert reaches_map(vit, _x(2), "L3") and not reaches_map(vit, _x(2), "L4")
    assert float(gradcam(vit, _x(2), "L4", 1).abs().max()) == 0.0  # what the figure drew before
    m = tiny_resnet()
    assert reaches_map(m, _x(2), "L3") and reaches_map(m, _x(2), "L4")
