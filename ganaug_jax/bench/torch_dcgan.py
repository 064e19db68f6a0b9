"""The PyTorch peer of `ganaug_jax.models.dcgan`: the same layers, shapes and parameter
counts (the benchmark asserts them equal), trained by the classic PyTorch DCGAN loop.

Generator: [Embedding concat] -> Linear(no bias) -> BatchNorm2d -> ReLU -> (ConvTranspose2d
4x4/2/1 no bias -> BatchNorm2d -> ReLU) x (n-1) -> ConvTranspose2d 4x4/2/1 -> tanh.
Discriminator: (Conv2d 4x4/2/1 -> LeakyReLU 0.2) x n -> flatten -> Linear(1)
[+ projection <Embedding(y), phi>]. BatchNorm momentum 0.1 = flax's 0.9, eps 1e-5.
One iteration (`make_iteration`): fakes from fresh z; D step on real and fake (fakes
detached); G step on the same fakes (the classic loop reuses them) with D's parameters frozen
(`requires_grad_(False)`, as careful PyTorch GAN loops do: the classic example's G backward
also computes D's weight gradients, ~9 % more FLOPs, which it then discards); Adam for both;
non-saturating loss (BCE with logits). Requires torch (the `bench` extra or the GPU image).
"""

import torch
from torch import nn
from torch.nn import functional as F


def _channels(resolution: int, width: int) -> list[int]:
    stages = (resolution // 4).bit_length() - 1
    return [width * 2**(stages - 1 - i) for i in range(stages)]


class Generator(nn.Module):
    def __init__(self, resolution, channels, width, latent_dim, num_classes=0):
        super().__init__()
        hidden = _channels(resolution, width)
        self.base, self.c0 = resolution // 2**len(hidden), hidden[0]
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None
        in_dim = latent_dim * (2 if num_classes else 1)
        self.project = nn.Linear(in_dim, self.base * self.base * hidden[0], bias=False)
        self.bn0 = nn.BatchNorm2d(hidden[0])
        body = []
        for c_in, c_out in zip(hidden[:-1], hidden[1:]):
            body += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                     nn.ReLU(True)]
        body += [nn.ConvTranspose2d(hidden[-1], channels, 4, 2, 1), nn.Tanh()]
        self.body = nn.Sequential(*body)

    def forward(self, z, y=None):
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], dim=1)
        h = self.project(z).view(-1, self.c0, self.base, self.base)
        return self.body(F.relu(self.bn0(h)))


class Discriminator(nn.Module):
    def __init__(self, resolution, channels, width, num_classes=0):
        super().__init__()
        body, c_in = [], channels
        for i in range(len(_channels(resolution, width))):
            body += [nn.Conv2d(c_in, width * 2**i, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            c_in = width * 2**i
        self.body = nn.Sequential(*body, nn.Flatten())
        features = (resolution // 2**(len(body) // 2))**2 * c_in
        self.linear = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features) if num_classes else None

    def forward(self, x, y=None):
        phi = self.body(x)
        logits = self.linear(phi).view(-1)
        if self.embed is not None:
            logits = logits + (self.embed(y) * phi).sum(dim=1)
        return logits


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def make_iteration(*, resolution, channels, width, batch, latent_dim, num_classes=0,
                   channels_last=False, compile_it=False, bfloat16=False, device="cpu",
                   seed=0):
    """Returns (iteration() -> None, generator, discriminator) on random uniform real data;
    iteration() synchronises the device before returning. bfloat16: forward passes under
    `torch.autocast` (float32 parameters and optimizer state, as ganaug_jax's option)."""
    torch.manual_seed(seed)
    if compile_it:  # a fresh compile cache per config: recompiles of the shared forward code
        torch._dynamo.reset()  # across configs would hit dynamo's limit and fall back to eager
    g = Generator(resolution, channels, width, latent_dim, num_classes).to(device)
    d = Discriminator(resolution, channels, width, num_classes).to(device)
    x = torch.rand(batch, channels, resolution, resolution, device=device) * 2 - 1
    y = torch.randint(0, num_classes, (batch,), device=device) if num_classes else None
    if channels_last:
        g, d = g.to(memory_format=torch.channels_last), d.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    g_opt = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    g_run, d_run = (torch.compile(g), torch.compile(d)) if compile_it else (g, d)

    def iteration():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bfloat16):
            step()
        if device == "cuda":
            torch.cuda.synchronize()

    def step():
        z = torch.randn(batch, latent_dim, device=device)
        y_fake = torch.randint(0, num_classes, (batch,), device=device) if num_classes else None
        fake = g_run(z, y_fake)
        d_opt.zero_grad(set_to_none=True)
        real_logits, fake_logits = d_run(x, y), d_run(fake.detach(), y_fake)
        d_loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                  + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        d_loss.backward()
        d_opt.step()
        g_opt.zero_grad(set_to_none=True)
        d.requires_grad_(False)  # G's backward needs D's input gradients, not its weights
        logits = d_run(fake, y_fake)
        F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
        d.requires_grad_(True)
        g_opt.step()

    return iteration, g, d
