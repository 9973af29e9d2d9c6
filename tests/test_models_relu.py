"""Lucid's redirected ReLU gradient, checked against the rule written out image by image."""

import pytest
import torch
from torch import nn

from lucent_core.relu import RedirectedReLU, redirected_relu, set_redirected_relu


def reference_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The rule per image: the ordinary ReLU gradient if it is non-zero anywhere, else the
    gradient passed everywhere except where it would push a negative input further down."""
    out = torch.empty_like(grad)
    for i in range(len(x)):
        relu_grad = torch.where(x[i] > 0, grad[i], torch.zeros_like(grad[i]))
        if relu_grad.abs().max() > 0:
            out[i] = relu_grad
        else:
            out[i] = torch.where((x[i] <= 0) & (grad[i] > 0), torch.zeros_like(grad[i]),
                                 grad[i])
    return out


def backward(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_()
    redirected_relu(x).backward(grad)
    return x.grad


def test_images_with_an_ordinary_gradient_keep_it():
    torch.manual_seed(0)
    x, grad = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    result = backward(x, grad)
    assert torch.equal(result, torch.where(x > 0, grad, torch.zeros_like(grad)))
    assert torch.equal(result, reference_grad(x, grad))


def test_dead_images_get_the_redirected_gradient_and_the_others_do_not():
    torch.manual_seed(1)
    x, grad = torch.randn(4, 3, 6, 6), torch.randn(4, 3, 6, 6)
    x[1] = -x[1].abs() - 0.1  # image 1: every input negative, no ordinary gradient
    x[3] = -x[3].abs() - 0.1
    result = backward(x, grad)
    assert torch.equal(result, reference_grad(x, grad))
    # a dead image is pushed up (descent on grad < 0 raises the input) and never down
    assert (result[1] < 0).any() and not (result[1] > 0).any()
    assert torch.equal(result[0], torch.where(x[0] > 0, grad[0], torch.zeros_like(grad[0])))


def test_forward_is_a_plain_relu_and_switching_off_gives_plain_gradients():
    x = torch.tensor([[-2.0, -1.0, 0.0, 3.0]], requires_grad=True)
    relu = RedirectedReLU(redirect=False)
    assert torch.equal(relu(x), torch.relu(x))
    dead = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    (-relu(dead).sum()).backward()
    assert torch.equal(dead.grad, torch.zeros(1, 2))  # plain ReLU: a dead unit gets nothing
    relu.redirect = True
    assert torch.equal(relu(x), torch.relu(x))
    dead.grad = None
    (-relu(dead).sum()).backward()
    assert torch.equal(dead.grad, -torch.ones(1, 2))  # redirected: pushed up


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_dtype_and_shape_follow_the_input(dtype):
    x = -torch.rand(2, 3, dtype=dtype) - 0.5
    grad = -torch.ones(2, 3, dtype=dtype)
    result = backward(x, grad)
    assert result.dtype == dtype and result.shape == x.shape
    assert torch.equal(result, grad)  # all dead, all pushed up: passed through


def test_the_redirected_backward_compiles_as_one_graph_with_the_same_gradient():
    """torch.compile must trace the backward whole: a graph break at every ReLU made
    InceptionV1's compiled render fail (an inductor error on the pieces' dynamic shapes)."""
    torch.manual_seed(2)
    x, grad = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    x[1] = -x[1].abs() - 0.1   # one dead image, so the redirected rule is exercised
    compiled = torch.compile(lambda t: (redirected_relu(t) * grad).sum(), fullgraph=True)
    leaf = x.clone().requires_grad_()
    compiled(leaf).backward()  # fullgraph=True: a graph break is an error
    torch.testing.assert_close(leaf.grad, reference_grad(x, grad))


# --- every model from create_model has switchable ReLUs ----------------------------------------

def test_create_model_swaps_torchvisions_relus_and_keeps_its_outputs():
    import torchvision
    from lucent_core.models import create_model
    from lucent_core.relu import set_redirected_relu
    model = create_model("torchvision:resnet18", pretrained=False)
    assert not any(type(m) is nn.ReLU for m in model.modules())
    assert set_redirected_relu(model, False) == 9  # the stem's and one per BasicBlock
    plain = torchvision.models.resnet18().eval()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x))


def test_use_redirected_relus_reaches_nested_and_reused_modules():
    from lucent_core.relu import use_redirected_relus

    class Reuses(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU(inplace=True)
            self.inner = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())

        def forward(self, x):
            return self.relu(self.inner(self.relu(x)))

    net = Reuses()
    x = torch.randn(1, 3, 4, 4)
    before = net(x.clone())
    assert use_redirected_relus(net) == 2 and use_redirected_relus(net) == 0
    assert isinstance(net.relu, RedirectedReLU) and isinstance(net.inner[1], RedirectedReLU)
    torch.testing.assert_close(net(x), before)


def test_a_swapped_in_place_relu_keeps_its_side_effect_outside_redirected_renders():
    from lucent_core.relu import redirecting, use_redirected_relus

    class SideEffect(nn.Module):  # relies on the ReLU writing into y, not on its result
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            y = x * 1.0
            self.relu(y)
            return y

    net = SideEffect()
    x = torch.randn(2, 3)
    use_redirected_relus(net)
    assert net.relu.inplace and torch.equal(net(x), torch.relu(x))
    image = torch.randn(2, 3, requires_grad=True)
    with redirecting(net):  # the redirected gradient needs its own output: not in place
        assert net.relu(image).data_ptr() != image.data_ptr()


@pytest.mark.parametrize("call, error, name", [
    (lambda: set_redirected_relu(nn.Sequential(RedirectedReLU()), "no"), TypeError, "redirect"),
])
def test_set_redirected_relu_refuses_bad_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()
