"""The engine: one generator, its directions and encoder, and the faces it draws.

What handlers use to serve a request: the model, drawing (several jobs' faces in one
forward pass), projecting alone, and members' kept faces with their own noise maps
(``engine/latent/kept.py``). Which handler serves which request is not its business
(``engine/jobs/dispatch.py``); nothing here imports a handler.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from engine.face.align import Framing
from engine.jobs.asks import Draw
from engine.jobs.bundle import load_bundle
from engine.latent.batch import Member, ProjectionBatch
from engine.latent.kept import KEPT_NOISE_MAX_RES, KeptFaceError, mix_noise, pack_noise, unpack_noise
from engine.latent.projector import Projection, w_stats
from engine.model import host
from engine.model.images import DISPLAY, png_bytes, resize, to_uint8
from engine.model.runtime import prepare_device
from engine.protocol import BadArgument, Face, File, ModelMismatch, as_face


class Engine:
    def __init__(self, model_path: str | Path | None = None, device: str = "cpu",
                 directions_path: str | Path | None = None, kept_noise_max_res: int = KEPT_NOISE_MAX_RES,
                 encoder_path: str | Path | None = None) -> None:
        prepare_device(device)
        bundle = load_bundle(model_path, device, directions_path, encoder_path)
        self.device = device
        self.G, self.model_id, self.directions, self.encoder = (
            bundle.G,
            bundle.model_id,
            bundle.directions,
            bundle.encoder,
        )
        self.w_std = w_stats(self.G)[1]
        self.framing = Framing.from_dict(bundle.provenance.get("framing"))
        layers = self.G.synthesis.noise_layers()
        self.noise_res = [layer.resolution for layer in layers]
        self.const_noise = [layer.noise_const.detach().cpu().numpy().astype(np.float32) for layer in layers]
        self.kept_noise_max_res = kept_noise_max_res
        self.kept_layers = [
            i for i, r in enumerate(self.noise_res) if r <= kept_noise_max_res
        ]  # the rest stay constant
        self.noise_rule = "mix"
        self._subspace = None
        self.graphs = torch.device(device).type == "cuda"  # projection steps replayed as CUDA graphs

    @classmethod
    def of(cls, spec) -> Engine:
        """The engine an :class:`~engine.protocol.spec.EngineSpec` describes."""
        return cls(spec.model, spec.device, spec.directions, encoder_path=spec.encoder)

    def subspace(self):
        """The principal directions of W the look-alike search moves in (computed once)."""
        if self._subspace is None:
            from engine.jobs.lookalike import Subspace

            self._subspace = Subspace.of(self.G)
        return self._subspace

    # --- running a request -------------------------------------------------------------------

    def serve_alone(self, ask):
        """What a handler asked for, done for it alone: a :class:`Draw`'s images, or its projection(s)."""
        return self.draw_all([ask])[0] if isinstance(ask, Draw) else self.project_alone(ask)

    def drive(self, steps):
        """Run a generator of asks (a handler's, or a long search's) alone to its return value."""
        try:
            ask = next(steps)
            while True:
                ask = steps.send(self.serve_alone(ask))
        except StopIteration as done:
            return done.value

    def pause(self) -> Draw:
        """A :class:`Draw` of nothing: a long handler yields it between bounded chunks of its own
        work (descriptors, a search's scoring), so the scheduler runs other members' steps meanwhile."""
        return Draw(np.zeros((0, self.G.num_ws, self.G.w_dim), np.float32), [], np.zeros((0, 1), np.float32))

    def new_batch(self) -> ProjectionBatch:
        return ProjectionBatch(self.G, kept_noise_max_res=self.kept_noise_max_res, graphs=self.graphs)

    def project_alone(self, ask: Member | list[Member]) -> Projection | list[Projection]:
        """One job's projection, or its list of projections run as one batch (a /team photo)."""
        members = ask if isinstance(ask, list) else [ask]
        batch = self.new_batch()
        for member in members:
            batch.add(member)
        finished = []
        while batch.members:
            host.working()  # each step at this engine's share of the host's cores
            finished += batch.step()
        done = {id(m): p for m, p in finished}
        projections = [done[id(m)] for m in members]
        return projections if isinstance(ask, list) else projections[0]

    # --- drawing -----------------------------------------------------------------------------

    def render(self, ws: np.ndarray, noise: list[np.ndarray] | None = None) -> np.ndarray:
        """``[N, num_ws, w_dim]`` -> ``[N, H, W, 3]`` uint8 at the model's resolution, every face
        with the same per-layer noise maps (default: the model's constant maps)."""
        return self.draw_all([self.plain(ws, noise)])[0]

    def plain(self, ws: np.ndarray, noise: list[np.ndarray] | None = None) -> Draw:
        """The :class:`Draw` of :meth:`render`."""
        ws = np.ascontiguousarray(ws, dtype=np.float32)
        return Draw(ws, [noise or self.const_noise], np.ones((len(ws), 1), np.float32))

    def draw(self, ws: np.ndarray, faces: list[list[np.ndarray]], weights: np.ndarray, batch: int = 16) -> np.ndarray:
        """Render ``ws`` ``[N, num_ws, w_dim]``; item ``i``'s noise maps mix the ``faces``' maps
        with ``weights[i]`` (``[K]`` or ``[K, num_ws]``: style weights, see :func:`mix_noise`)."""
        return self.draw_all([Draw(ws, faces, weights)], batch)[0]

    def draw_all(self, asks: list[Draw], batch: int = 16) -> list[np.ndarray]:
        """Several draws (several jobs' faces) through the generator together, ``batch`` images
        per forward; each image is what it would be drawn alone (engine/model/modconv.py)."""
        host.working()
        t0 = time.perf_counter()
        device = self.G.w_avg.device
        items = [(ask, i) for ask in asks for i in range(len(ask.ws))]
        out = []
        with torch.no_grad():
            for start in range(0, len(items), batch):
                chunk = items[start : start + batch]
                maps = [mix_noise(ask.faces, ask.weights[i], self.noise_rule) for ask, i in chunk]
                noise = [
                    torch.from_numpy(np.stack([m[layer] for m in maps])[:, None]).to(device)
                    for layer in range(len(self.noise_res))
                ]
                ws = np.stack([ask.ws[i] for ask, i in chunk]).astype(np.float32, copy=False)
                out.append(to_uint8(self.G.synthesis(torch.from_numpy(ws).to(device), noise=noise)))
        imgs = np.concatenate(out) if out else np.zeros((0, self.G.resolution, self.G.resolution, 3), np.uint8)
        per_image = (time.perf_counter() - t0) / max(1, len(items))
        for ask in asks:
            ask.seconds = per_image * len(ask.ws)
        return np.split(imgs, np.cumsum([len(ask.ws) for ask in asks])[:-1])

    def display(self, img: np.ndarray) -> np.ndarray:
        return resize(img, max(DISPLAY, img.shape[0]))

    def png(self, img: np.ndarray, name: str, description: str = "") -> File:
        return File(name, png_bytes(self.display(img)), description)

    # --- kept faces --------------------------------------------------------------------------

    def face(self, face: Face) -> tuple[np.ndarray, list[np.ndarray]]:
        """The W+ latent and per-layer noise maps of a kept face, checked against this model."""
        ws = face.ws
        if ws.shape != (self.G.num_ws, self.G.w_dim):
            raise ModelMismatch("That latent was made by a different model; project the photo again.")
        if face.noise is None or self.noise_rule == "const":
            return ws, self.const_noise
        try:
            kept = unpack_noise(face.noise, [self.noise_res[i] for i in self.kept_layers])
        except KeptFaceError as exc:
            raise BadArgument(str(exc)) from None
        maps = list(self.const_noise)
        for i, m in zip(self.kept_layers, kept):
            maps[i] = m
        return ws, maps

    def faces(self, faces) -> tuple[list[np.ndarray], list[list[np.ndarray]], bool]:
        """Several faces: their latents, their noise maps, and whether any kept its own noise."""
        got = [self.face(f) for f in faces]
        kept = any(f.noise is not None for f in faces) and self.noise_rule != "const"
        return [g[0] for g in got], [g[1] for g in got], kept

    def pack(self, maps: list[np.ndarray]) -> np.ndarray:
        """The part of a face's noise maps a kept face holds, packed (see engine/latent/kept.py)."""
        return pack_noise([maps[i] for i in self.kept_layers])

    def kept(self, ws: np.ndarray, faces: list[list[np.ndarray]], weights: np.ndarray, has_noise: bool) -> Face:
        """A new face the member may keep: ``ws`` with its parents' noise maps mixed by ``weights``."""
        noise = self.pack(mix_noise(faces, weights, self.noise_rule)) if has_noise else None
        return as_face(ws, noise)

    def split(self, split: int | None) -> int:
        """The first style a mix takes from its second face (default: where the middle styles start)."""
        from engine.latent import edits

        if split is None:
            return edits.layer_ranges(self.G.num_ws)["middle"].start
        if not 1 <= split <= self.G.num_ws - 1:
            raise BadArgument(f"split must lie between 1 and {self.G.num_ws - 1} for this model.")
        return split

    def layers(self, layers: str) -> str:
        from engine.latent import edits

        try:
            edits.parse_layers(self.G.num_ws, layers)
        except ValueError:
            raise BadArgument(
                f"layers must be a style group or a range below {self.G.num_ws} for this model."
            ) from None
        return layers
