"""Several members' W+ projections advancing together, one batched step at a time.

Each member keeps everything of its own: target, start, schedule and position in it,
latent noise (its own seeded generator), noise maps and Adam moments, loss and
progress. Only the forward and backward passes are shared: the losses are summed, so
each member's gradient is exactly its own loss's gradient (members never mix), and the
Adam update is elementwise with each member's own learning rate and bias correction.
A member may join between any two steps and leaves as soon as its last step is done.

Not bit for bit: the batched convolutions and their gradients are reduced in an order that
depends on the batch size, the thread count and the CPU's kernels, and a projection
amplifies those last-bit differences (on a photo the model cannot draw exactly, W+ values
drift apart by whole units while the fit stays the same). So a member gets the same
likeness and fit alone or in a batch, within tests/closeness.py's bounds, under every
setting tests/test_numerics.py runs; bench/numerics.py measures each.

Nothing in a step reads a value back to the host: the learning rates and the latent
noise of every step are laid out on the device when a member joins and picked by each
member's step counter there, losses stay device tensors until a preview or the end, and
renormalisation happens on the device. On CUDA the step can therefore be captured in a
CUDA graph and replayed (``graphs=True``); on the CPU it runs eagerly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.latent.edits import layer_ranges
from engine.latent.kept import KEPT_NOISE_MAX_RES
from engine.latent.projector import (
    ADAM_BETAS,
    DEFAULT_STEPS,
    ROLUX,
    ProgressFn,
    Projection,
    Schedule,
    latent_noise_scale,
    lr_schedule,
    make_loss,
    noise_regularizer,
    psnr,
    realism_regularizer,
    refine_schedule,
    w_gaussian,
    w_plus_regularizer,
    w_stats,
)
from engine.model.images import from_uint8, to_uint8
from engine.model.networks import Generator

ADAM_EPS = 1e-8
GRAPH_WARMUP = 3  # eager steps before a CUDA graph is captured (each one a real step)


@dataclass(eq=False)  # a member is itself: compared by identity
class Member:
    """One projection asked for: an aligned face ``[H, W, 3]`` uint8 at the model's size."""

    target: np.ndarray
    steps: int = 300
    init_ws: np.ndarray | None = None
    schedule: Schedule | None = None
    seed: int = 0
    progress: ProgressFn | None = None
    every: int = 10
    # filled in by the batch
    step: int = 0
    t0: float = 0.0
    losses: list = field(default_factory=list)  # one device scalar per step
    frames: list = field(default_factory=list)
    timeline: list = field(default_factory=list)


def _stack_pad(rows: list[torch.Tensor], length: int) -> torch.Tensor:
    """Stack per-member tables ``[steps_i, ...]``, padded with zeros to ``length`` steps."""
    out = rows[0].new_zeros([len(rows), length, *rows[0].shape[1:]])
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


class ProjectionBatch:
    """The members being projected now; :meth:`step` advances all of them by one step."""

    def __init__(
        self,
        G: Generator,
        loss_kind: str = "auto",
        kept_noise_max_res: int = KEPT_NOISE_MAX_RES,
        graphs: bool = False,
        autocast: torch.dtype | None = None,
        fused: bool | None = None,
    ) -> None:
        self.G, self.loss_kind = G, loss_kind
        self.device = G.w_avg.device
        self.w_avg, self.w_std = w_stats(G)
        layers = G.synthesis.noise_layers()
        self.const = [
            layer.noise_const.detach().float().reshape(1, 1, layer.resolution, layer.resolution) for layer in layers
        ]
        self.noise_res = [layer.resolution for layer in layers]
        self.kept_noise_max_res = kept_noise_max_res
        self.free_layers: list[int] | None = None  # the maps every member moves (fixed by the first to join)
        self.w_mean, self.w_upper = w_gaussian(G)
        self.graphs = graphs and self.device.type == "cuda"
        self.autocast = autocast  # e.g. torch.bfloat16: the forward pass under autocast (bench/gpu.py measures it)
        self.fused = fused  # the synthesis path (None: the network's own choice for the device)
        self.members: list[Member] = []
        self._tables: list[dict] = []  # per member: target, lr and latent-noise tables, weights
        self.w: torch.Tensor | None = None  # [n, num_ws, w_dim]; the free noise maps [n, 1, r, r]; Adam moments
        self.noises: list[torch.Tensor] = []
        self._graph = None
        self._eager_steps = 0

    # --- joining and leaving -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.members)

    def add(self, member: Member) -> None:
        """Join at the next step."""
        G = self.G
        if member.target.shape[:2] != (G.resolution, G.resolution):
            raise ValueError(f"target must be {G.resolution}×{G.resolution}, not {member.target.shape[:2]}")
        member.steps = max(1, int(member.steps))
        member.t0 = time.perf_counter()
        if member.init_ws is not None:
            start = torch.from_numpy(np.ascontiguousarray(member.init_ws, dtype=np.float32)).to(self.device)
        else:
            start = self.w_avg.expand(G.num_ws, -1)
        if member.schedule is None and member.init_ws is None:
            member.schedule = ROLUX
        elif member.schedule is None:
            with torch.no_grad():
                guess = to_uint8(G.synthesis(start[None].float(), noise_mode="const"))[0]
            member.schedule = refine_schedule(psnr(guess, member.target))
        s, n = member.schedule, member.steps
        finest = G.resolution >> (s.noise_octaves - 1) if s.noise_octaves else 0
        free = [i for i, r in enumerate(self.noise_res) if finest <= r <= self.kept_noise_max_res]
        if self.free_layers is not None and free != self.free_layers:
            raise ValueError("members of one batch must move the same noise maps")
        if s.w_first > 0:  # the styles start tied, at the guess's mean w, and move together
            start = start.mean(dim=0, keepdim=True).expand(G.num_ws, -1)
        # The member's whole schedule, laid out once: per-step learning rate and latent noise.
        lrs = torch.tensor([lr_schedule(k / n, s.initial_lr, s.rampdown) for k in range(n)], dtype=torch.float32)
        scales = torch.tensor([latent_noise_scale(k / n, self.w_std, s.noise_factor) for k in range(n)])
        gen = torch.Generator(device="cpu").manual_seed(member.seed)
        w_noise = torch.randn([n, G.num_ws, G.w_dim], generator=gen) * scales.reshape(-1, 1, 1).float()
        w = start.detach().float().reshape(1, G.num_ws, G.w_dim).clone()
        noises = []
        for i in free:  # the model's constant maps, renormalised, are where the free maps start
            x = self.const[i].clone()
            x -= x.mean()
            x *= x.square().mean().rsqrt()
            noises.append(x)
        self._tables.append(
            {
                "target": from_uint8(member.target).to(self.device),
                "lr": lrs.to(self.device),
                "w_noise": w_noise.to(self.device),
                "consts": torch.tensor(
                    [[s.noise_lr_mul, s.noise_reg_weight, s.w_plus_weight, s.w_mean_weight,
                      float(math.ceil(s.w_first * n))]], device=self.device
                ),
                "realism": self._realism_weights(s),
            }
        )
        self.members.append(member)
        self.free_layers = free
        first = self.w is None
        self.w = w if first else torch.cat([self.w, w])
        self.noises = noises if first else [torch.cat([a, b]) for a, b in zip(self.noises, noises)]
        zero = torch.zeros_like(w)
        self.m_w = zero.clone() if first else torch.cat([self.m_w, zero])
        self.v_w = zero.clone() if first else torch.cat([self.v_w, zero])
        self.m_n = (
            [torch.zeros_like(x) for x in self.noises]
            if first
            else [torch.cat([a, torch.zeros_like(b)]) for a, b in zip(self.m_n, noises)]
        )
        self.v_n = (
            [torch.zeros_like(x) for x in self.noises]
            if first
            else [torch.cat([a, torch.zeros_like(b)]) for a, b in zip(self.v_n, noises)]
        )
        self.counter = torch.tensor([m.step for m in self.members], dtype=torch.long, device=self.device)
        self._relayout()

    def _realism_weights(self, s: Schedule) -> torch.Tensor:
        """``[1, num_ws]``: each style's weight of the realism penalty (its mean over styles is
        ``realism_weight`` when the coarse styles are not weighted apart)."""
        weights = torch.full([1, self.G.num_ws], s.realism_weight / self.G.num_ws)
        if s.realism_coarse_weight is not None:
            coarse = layer_ranges(self.G.num_ws)["coarse"]  # layout and pose
            weights[0, coarse.start:coarse.stop] = s.realism_coarse_weight / self.G.num_ws
        return weights.to(self.device)

    def _drop(self, keep: list[int]) -> None:
        """Keep only the members at ``keep``, with all their state."""
        self._tables = [self._tables[i] for i in keep]
        self.members = [self.members[i] for i in keep]
        if not keep:
            self.w, self.free_layers = None, None
            self.noises = self.m_n = self.v_n = []
        else:
            idx = torch.tensor(keep, dtype=torch.long, device=self.device)
            self.w, self.m_w, self.v_w, self.counter = (
                x.index_select(0, idx) for x in (self.w, self.m_w, self.v_w, self.counter)
            )
            self.noises, self.m_n, self.v_n = (
                [x.index_select(0, idx) for x in xs] for xs in (self.noises, self.m_n, self.v_n)
            )
        self._relayout()

    def _relayout(self) -> None:
        """The members' tables as batched tensors (after a member joined or left)."""
        self._graph = None
        self._eager_steps = 0
        self.img = self.dist = None
        if not self.members:
            return
        tables, steps = self._tables, max(m.steps for m in self.members)
        self.targets = torch.cat([t["target"] for t in tables])
        self.loss_fn = make_loss(self.targets, self.loss_kind)
        self.lr = _stack_pad([t["lr"] for t in tables], steps)
        self.w_noise = _stack_pad([t["w_noise"] for t in tables], steps)
        self.consts = torch.cat([t["consts"] for t in tables])
        self.realism = torch.cat([t["realism"] for t in tables])
        self.rows_idx = torch.arange(len(tables), device=self.device)

    # --- one step ------------------------------------------------------------------------------

    def _losses(self, w: torch.Tensor, noises: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-member distance ``[n]``, the summed objective, and the rendered batch."""
        n = len(self.members)
        lr_idx = self.counter.clamp(max=self.lr.shape[1] - 1)
        w_in = w + self.w_noise[self.rows_idx, lr_idx]
        maps = [c.expand(n, -1, -1, -1) for c in self.const]
        for i, m in zip(self.free_layers, noises):
            maps[i] = m
        if self.autocast is not None:
            with torch.autocast(self.device.type, dtype=self.autocast):
                img = self.G.synthesis(w_in, noise=maps, fused=self.fused)
            img = img.float()
        else:
            img = self.G.synthesis(w_in, noise=maps, fused=self.fused)
        dist = self.loss_fn.per_sample(img)
        total = dist
        if noises:
            total = total + self.consts[:, 1] * noise_regularizer(noises, per_sample=True)
        spread, centre = w_plus_regularizer(w, self.w_avg, self.w_std, per_sample=True)
        total = total + self.consts[:, 2] * spread + self.consts[:, 3] * centre
        total = total + (self.realism * realism_regularizer(w, self.w_mean, self.w_upper)).sum(dim=1)
        return dist, total.sum(), img

    def _adam(
        self,
        param: torch.Tensor,
        grad: torch.Tensor,
        m: torch.Tensor,
        v: torch.Tensor,
        lr: torch.Tensor,
        bc1: torch.Tensor,
        bc2_sqrt: torch.Tensor,
    ) -> None:
        """torch.optim.Adam's update, each member (first axis) with its own lr and step."""
        shape = (-1,) + (1,) * (param.ndim - 1)
        b1, b2 = ADAM_BETAS
        m.lerp_(grad, 1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (v.sqrt() / bc2_sqrt.reshape(shape)).add_(ADAM_EPS)
        param.addcdiv_(m * (lr / bc1).reshape(shape), denom, value=-1.0)

    def _compute(self) -> None:
        """One step for every member, on the device, with no value read back."""
        w = self.w.detach().requires_grad_(True)
        noises = [x.detach().requires_grad_(True) for x in self.noises]
        dist, total, img = self._losses(w, noises)
        grads = list(torch.autograd.grad(total, [w, *noises]))
        with torch.no_grad():
            tied = (self.counter.float() < self.consts[:, 4]).float().reshape(-1, 1, 1)  # still in W: one w
            grads[0] = tied * grads[0].mean(dim=1, keepdim=True) + (1 - tied) * grads[0]
            steps_done = (self.counter + 1).float()
            lr = self.lr[self.rows_idx, self.counter.clamp(max=self.lr.shape[1] - 1)]
            b1, b2 = ADAM_BETAS
            bc1 = 1 - b1**steps_done
            bc2_sqrt = (1 - b2**steps_done).sqrt()
            self._adam(self.w, grads[0], self.m_w, self.v_w, lr, bc1, bc2_sqrt)
            lr_n = lr * self.consts[:, 0]
            for x, g, m, v in zip(self.noises, grads[1:], self.m_n, self.v_n):
                self._adam(x, g, m, v, lr_n, bc1, bc2_sqrt)
                x -= x.mean(dim=[1, 2, 3], keepdim=True)
                x *= x.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
            self.counter += 1
        if self.img is None:
            self.img, self.dist = img.detach(), dist.detach()
        else:
            self.img.copy_(img.detach())
            self.dist.copy_(dist.detach())

    def _run_step(self) -> None:
        if not self.graphs or self._eager_steps < GRAPH_WARMUP:
            if self.graphs:
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    self._compute()
                torch.cuda.current_stream().wait_stream(stream)
            else:
                self._compute()
            self._eager_steps += 1
            return
        if self._graph is None:
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._compute()
        self._graph.replay()

    def step(self) -> list[tuple[Member, Projection]]:
        """Advance every member one step; returns the members that finished, with their projections."""
        if not self.members:
            return []
        self._run_step()
        dist = self.dist.clone()  # the step's buffer is overwritten by the next step
        now = time.perf_counter()
        for i, m in enumerate(self.members):
            m.losses.append(dist[i])
            m.timeline.append(now - m.t0)
            m.step += 1
            if m.step % m.every == 0 or m.step == 1:
                preview = to_uint8(self.img[i : i + 1])[0]
                m.frames.append(preview)
                if m.progress is not None:
                    m.progress(m.step, m.steps, float(dist[i]), preview)
        done = [i for i, m in enumerate(self.members) if m.step >= m.steps]
        if not done:
            return []
        finished = [(self.members[i], self._finish(i)) for i in done]
        self._drop([i for i in range(len(self.members)) if i not in done])
        return finished

    def _finish(self, i: int) -> Projection:
        m = self.members[i]
        G = self.G
        with torch.no_grad():
            # Every map a kept face holds, as it holds it (float16): the ones that moved, and the
            # model's own maps that did not (a float32 model's are not float16 numbers).
            maps = [c.half().float() if r <= self.kept_noise_max_res else c.clone()
                    for c, r in zip(self.const, self.noise_res)]
            for layer, x in zip(self.free_layers, self.noises):
                maps[layer] = x[i : i + 1].half().float()
            w = self.w[i : i + 1].clone()
            final = to_uint8(G.synthesis(w, noise=maps))[0]
        m.frames.append(final)
        losses = torch.stack(m.losses).tolist()
        if m.progress is not None:
            m.progress(m.steps, m.steps, losses[-1], final)
        return Projection(
            ws=w[0].cpu().numpy().astype(np.float32),
            noise=[x[0, 0].cpu().numpy() for x in maps],
            image=final,
            frames=m.frames,
            losses=losses,
            loss_kind=self.loss_fn.name,
            steps=m.steps,
            seconds=time.perf_counter() - m.t0,
            psnr=psnr(final, m.target),
            model_id=getattr(G, "model_id", "unknown"),
            figures={"schedule": m.schedule.name},
            timeline=m.timeline,
        )

    def remove(self, member: Member) -> None:
        """Take a member out (its job failed or was cancelled); the others carry on."""
        self._drop([i for i, m in enumerate(self.members) if m is not member])

    def run(self) -> list[tuple[Member, Projection]]:
        """Step until every member present has finished."""
        out = []
        while self.members:
            out += self.step()
        return out


def project(
    G: Generator,
    target: np.ndarray,
    steps: int = DEFAULT_STEPS,
    *,
    init_ws: np.ndarray | None = None,
    loss_kind: str = "auto",
    progress: ProgressFn | None = None,
    every: int = 10,
    seed: int = 0,
    schedule: Schedule | None = None,
    kept_noise_max_res: int = KEPT_NOISE_MAX_RES,
    graphs: bool = False,
) -> Projection:
    """Project an aligned face ``[H, W, 3]`` uint8 (the model's resolution) into W+.

    Starts from ``init_ws`` (an encoder's guess) when given, else from ``w_avg``; the
    schedule defaults to :func:`refine_schedule` of the guess's fit for the former and the
    published :data:`ROLUX` one for the latter.

    ``progress(step, steps, loss, preview)`` is called every ``every`` steps with the
    current render (uint8) and once at the end. Noise maps finer than
    ``kept_noise_max_res`` stay at the model's constant maps (a kept face does not hold them).
    The noise maps start from the model's own constant maps (what "const" renders use), so
    a face the model drew is reachable exactly. This is a batch of one
    (:class:`ProjectionBatch`): alone or beside others, the same steps;
    ``graphs`` replays the step as a CUDA graph on a CUDA device.
    """
    batch = ProjectionBatch(G, loss_kind, kept_noise_max_res, graphs=graphs)
    batch.add(Member(target, steps, init_ws, schedule, seed, progress, every))
    [(_, projection)] = batch.run()
    return projection
