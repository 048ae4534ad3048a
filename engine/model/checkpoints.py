"""Generator checkpoints: the native safetensors format and importers for
rosinality/stylegan2-pytorch ``.pt`` and NVIDIA stylegan2-ada-pytorch ``.pkl`` files.

Native format: one ``.safetensors`` file whose header metadata ``wspace`` holds a JSON
document ``{"config": GeneratorConfig, "model_id": str, "provenance": {...}}``; the
tensors are the generator's state dict (``mapping.w_avg`` included).
"""

from __future__ import annotations

import hashlib
import json
import pickletools
import re
import zipfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from engine.model.modconv import fir_filter
from engine.model.networks import Generator, GeneratorConfig
from engine.model.safe_pickle import PersistentRecord, UnsafePickle, check_tensor, load_snapshot

MODELS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = MODELS_DIR / "wspace64.safetensors"
FORMAT_KEY = "wspace"
MAX_MODEL_BYTES = 2 * 2**30  # NVIDIA's FFHQ 1024 pickle is 364 MB
FILTER_SUFFIX = "resample_filter"
MAX_PICKLE_BYTES = 64 * 2**20  # the pickled structure inside a .pt (the tensors are beside it)
MAX_MODULE_DEPTH = 32  # a StyleGAN2-ADA generator's module tree is 5 deep
MAX_MODULES = 20_000  # … and has ~200 modules
# What a rosinality .pt's pickle may name: checked before torch.load reads it (weights_only is
# the second line, not the only one).
TORCH_PT_GLOBALS = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
                    ("torch._utils", "_rebuild_parameter")} | {
    ("torch", f"{kind}Storage") for kind in ("Float", "Half", "BFloat16", "Double", "Long", "Int", "Short", "Char",
                                              "Byte", "Bool")}
_LOAD_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError, UnsafePickle, OSError,
                EOFError, RecursionError, zipfile.BadZipFile)


class CheckpointError(ValueError):
    """The file is not a generator this engine can load."""


def model_id_for(state: dict[str, torch.Tensor], config: GeneratorConfig) -> str:
    """A content hash: the same weights always get the same id."""
    h = hashlib.sha256(json.dumps(config.to_json(), sort_keys=True).encode())
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def save_native(G: Generator, path: str | Path, provenance: dict | None = None,
                model_id: str | None = None, dtype: torch.dtype = torch.float32) -> str:
    state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
             for k, v in G.state_dict().items()}
    state.update(custom_filters(G))
    model_id = model_id or model_id_for(state, G.config)
    meta = {"config": G.config.to_json(), "model_id": model_id, "provenance": provenance or {}}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={FORMAT_KEY: json.dumps(meta)})
    return model_id


def read_native(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    name = Path(path).name
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(FORMAT_KEY, "null"))
            if not meta:
                raise CheckpointError(f"{name} is a safetensors file but not a wspace generator.")
            if not (
                isinstance(meta, dict)
                and isinstance(meta.get("config"), dict)
                and isinstance(meta.get("model_id"), str)
                and len(meta["model_id"]) <= 128
                and isinstance(meta.get("provenance", {}), dict)
            ):
                raise CheckpointError(f"{name} has a damaged wspace header.")
            try:
                GeneratorConfig.from_json(meta["config"])  # checked before any tensor is read
            except (ValueError, TypeError) as exc:
                raise CheckpointError(f"{name} describes an impossible generator: {str(exc).rstrip('.')}.") from None
            state = {k: f.get_tensor(k) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 (any failure to read a hostile file is one sentence)
        raise CheckpointError(f"{name} is not a readable safetensors file ({type(exc).__name__}).") from None
    return state, meta


def build_generator(
    state: dict[str, torch.Tensor],
    config: GeneratorConfig,
    model_id: str,
    provenance: dict | None = None,
    device: str | torch.device = "cpu",
) -> Generator:
    G = Generator(config)
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("The checkpoint holds something other than tensors.")
    odd = next((k for k, v in state.items() if v.is_complex() or v.is_quantized), None)
    if odd is not None:
        raise CheckpointError(f"The checkpoint's {odd} holds {str(state[odd].dtype).removeprefix('torch.')} "
                              "numbers; a generator's weights are real numbers.")
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(f"The checkpoint's weights are damaged ({bad} holds NaN or infinite values).")
    filters = {k: state.pop(k) for k in list(state) if k.endswith(FILTER_SUFFIX)}  # only non-standard ones are kept
    try:
        missing, unexpected = G.load_state_dict(state, strict=False)
        for name, f in filters.items():
            if tuple(f.shape) != (4, 4):
                raise CheckpointError(f"The checkpoint's {name} is not a 4×4 filter.")
            G.get_buffer(name).copy_(f)
    except AttributeError:
        raise CheckpointError("The checkpoint names a resampling filter its architecture does not have.") from None
    except RuntimeError:
        raise CheckpointError("The checkpoint's tensors do not have the shapes its architecture needs.") from None
    if missing or unexpected:
        raise CheckpointError(
            f"The checkpoint does not match its architecture (missing {missing[:3]}, unexpected {unexpected[:3]})."
        )
    G.model_id = model_id
    G.provenance = provenance or {}
    return G.eval().requires_grad_(False).to(device)


def load_generator(path: str | Path | None = None, device: str | torch.device = "cpu") -> Generator:
    """Load any supported generator; ``None`` means the embedded default model. Anything
    wrong with the file is one sentence (:class:`CheckpointError`)."""
    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.is_file():
        raise CheckpointError(f"no model file at {path}")
    if path.stat().st_size > MAX_MODEL_BYTES:
        limit = MAX_MODEL_BYTES // 2**30
        raise CheckpointError(f"{path.name} is larger than any generator this engine loads ({limit} GiB).")
    try:
        return _load(path, device)
    except CheckpointError as exc:
        raise CheckpointError(_one_line(str(exc))) from None
    except _LOAD_ERRORS as exc:
        raise CheckpointError(f"{path.name} is not a generator this engine can load ({type(exc).__name__}).") from None


def _one_line(text: str, most: int = 240) -> str:
    """The first line of an error, short enough to read, ending with a full stop."""
    line = (text.strip().splitlines() or ["The model file could not be read"])[0].strip()
    if len(line) > most:
        line = line[:most].rsplit(" ", 1)[0] + " …"
    return line if line.endswith((".", "…")) else line + "."


def _load(path: Path, device) -> Generator:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        state, meta = read_native(path)
        config = GeneratorConfig.from_json(meta["config"])
        return build_generator(state, config, meta["model_id"], meta.get("provenance"), device)
    if suffix == ".pt":
        state, config = import_rosinality(path)
    elif suffix == ".pkl":
        state, config = import_ada_pickle(path)
    else:
        raise CheckpointError(f"unknown model format {suffix!r}: expected .safetensors, .pt or .pkl")
    provenance = {"imported_from": path.name, "format": suffix[1:]}
    return build_generator(state, config, model_id_for(state, config), provenance, device)


# --- rosinality/stylegan2-pytorch -----------------------------------------------------------


def parameters_of(make) -> int:
    """How many numbers the module ``make()`` would hold, counted on torch's meta device: sizes a
    file declares are weighed before anything is allocated."""
    with torch.device("meta"):
        module = make()
    return sum(t.numel() for t in (*module.parameters(), *module.buffers()))


def check_torch_zip(path: str | Path) -> None:
    """Refuse a torch ``.pt`` whose pickle names anything but tensors and ordered dicts, or
    uses persistent ids other than storages, before torch reads it."""
    name = Path(path).name
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
            if any(i.compress_type != zipfile.ZIP_STORED for i in members):  # torch.save never compresses
                raise CheckpointError(
                    f"{name} was refused: its archive holds compressed data, which torch never writes."
                )
            if sum(i.file_size for i in members) > Path(path).stat().st_size:
                raise CheckpointError(f"{name} was refused: its archive declares more data than the file holds.")
            pickles = [i for i in members if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
            if len(pickles) != 1 or pickles[0].file_size > MAX_PICKLE_BYTES:
                raise CheckpointError(f"{name} is not a torch checkpoint of the expected layout.")
            data = z.read(pickles[0])
        strings: list[str] = []
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(arg)
            elif op.name in ("GLOBAL", "STACK_GLOBAL", "INST"):
                named = tuple(arg.split(" ", 1)) if op.name != "STACK_GLOBAL" else tuple(strings[-2:])
                if named not in TORCH_PT_GLOBALS:
                    raise CheckpointError(
                        f"{name} was refused: its pickle names {'.'.join(named)[:80]}, which is not a tensor."
                    )
            elif op.name == "EXT1" or op.name == "EXT2" or op.name == "EXT4" or op.name == "PERSID":
                raise CheckpointError(f"{name} was refused: its pickle uses {op.name}.")
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, IndexError) as exc:
        raise CheckpointError(f"{name} is not a readable torch checkpoint ({type(exc).__name__}).") from None


def import_rosinality(path: str | Path) -> tuple[dict[str, torch.Tensor], GeneratorConfig]:
    check_torch_zip(path)
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (torch.load raises many types for a damaged file: one sentence)
        raise CheckpointError(
            f"{Path(path).name} is not a readable rosinality checkpoint ({type(exc).__name__})."
        ) from None
    name = Path(path).name
    if isinstance(ckpt, dict) and not isinstance(ckpt.get("g_ema"), dict) and isinstance(ckpt.get("state_dict"), dict):
        # an e4e or pSp checkpoint: its decoder is a rosinality generator (engine/model/psp.py)
        sd = {
            k[len("decoder.") :]: v
            for k, v in ckpt["state_dict"].items()
            if isinstance(k, str) and k.startswith("decoder.")
        }
        ckpt = {"g_ema": sd, "latent_avg": ckpt.get("latent_avg")}
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("g_ema"), dict):
        raise CheckpointError(f"{name} has no 'g_ema' generator.")
    try:
        for key, t in [*ckpt["g_ema"].items(), ("latent_avg", ckpt.get("latent_avg"))]:
            if isinstance(t, torch.Tensor):
                check_tensor(t, str(key)[:80])
    except UnsafePickle as exc:
        raise CheckpointError(f"{name} was refused: {exc}.") from None
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        raise CheckpointError(f"{name}'s latent_avg is not a tensor.")
    return rosinality_state(ckpt["g_ema"], latent_avg, name)


def rosinality_state(
    sd: dict, latent_avg: torch.Tensor | None, name: str
) -> tuple[dict[str, torch.Tensor], GeneratorConfig]:
    """A rosinality ``g_ema`` state dict in our names, and its architecture."""
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise CheckpointError(f"{name}'s generator holds something other than named tensors.")
    path = Path(name)
    n_mlp = len({m.group(1) for k in sd if (m := re.match(r"style\.(\d+)\.weight$", k))})
    if n_mlp == 0 or "input.input" not in sd:
        raise CheckpointError(f"{Path(path).name} is not a rosinality StyleGAN2 generator")
    n_up = len([k for k in sd if re.match(r"to_rgbs\.\d+\.bias$", k)])
    resolution = 4 * 2**n_up
    channels = {4: sd["input.input"].shape[1]}
    for i in range(n_up):
        channels[8 * 2**i] = sd[f"convs.{2 * i}.conv.weight"].shape[1]
    fc0 = sd["style.1.weight"]
    config = GeneratorConfig(
        resolution=resolution,
        z_dim=fc0.shape[1],
        w_dim=fc0.shape[0],
        mapping_layers=n_mlp,
        mapping_lr_mul=0.01,
        img_channels=sd["to_rgb1.conv.weight"].shape[1],
        channels=channels,
    )
    out: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = sd[f"style.{i + 1}.weight"]
        out[f"mapping.fc{i}.bias"] = sd[f"style.{i + 1}.bias"]
    out["mapping.w_avg"] = (
        latent_avg.reshape(-1, config.w_dim)[0] if latent_avg is not None else torch.zeros(config.w_dim)
    )

    def styled(dst: str, src: str, noise_idx: int) -> None:
        out[f"{dst}.weight"] = sd[f"{src}.conv.weight"][0]
        out[f"{dst}.affine.weight"] = sd[f"{src}.conv.modulation.weight"]
        out[f"{dst}.affine.bias"] = sd[f"{src}.conv.modulation.bias"]
        out[f"{dst}.bias"] = sd[f"{src}.activate.bias"]
        out[f"{dst}.noise_strength"] = sd[f"{src}.noise.weight"].reshape([])
        out[f"{dst}.noise_const"] = sd[f"noises.noise_{noise_idx}"][0, 0]

    def torgb(dst: str, src: str) -> None:
        out[f"{dst}.weight"] = sd[f"{src}.conv.weight"][0]
        out[f"{dst}.affine.weight"] = sd[f"{src}.conv.modulation.weight"]
        out[f"{dst}.affine.bias"] = sd[f"{src}.conv.modulation.bias"]
        out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(-1)

    def blur(dst: str, src: str) -> None:
        """rosinality's blur kernel (×4 for the upsampling, applied as a true convolution) as our
        filter; kept only when it is not the standard one."""
        kernel = sd.get(src)
        if kernel is None:
            return
        if tuple(kernel.shape) != (4, 4):
            raise CheckpointError(f"{path.name}'s {src} is not a 4×4 kernel.")
        f = torch.flip(kernel.float(), [0, 1]) / 4
        if not _is_standard_fir(f):
            out[f"{dst}.{FILTER_SUFFIX}"] = f

    try:
        out["synthesis.b4.const"] = sd["input.input"][0]
        styled("synthesis.b4.conv1", "conv1", 0)
        torgb("synthesis.b4.torgb", "to_rgb1")
        for i in range(n_up):
            res = 8 * 2**i
            styled(f"synthesis.b{res}.conv0", f"convs.{2 * i}", 2 * i + 1)
            styled(f"synthesis.b{res}.conv1", f"convs.{2 * i + 1}", 2 * i + 2)
            torgb(f"synthesis.b{res}.torgb", f"to_rgbs.{i}")
            blur(f"synthesis.b{res}.conv0", f"convs.{2 * i}.conv.blur.kernel")
            blur(f"synthesis.b{res}", f"to_rgbs.{i}.upsample.kernel")
    except KeyError as exc:
        raise CheckpointError(f"{Path(path).name} lacks tensor {exc}") from None
    return out, config


# --- NVIDIA stylegan2-ada-pytorch ------------------------------------------------------------


def _flatten_record(
    rec: PersistentRecord, prefix: str, out: dict[str, torch.Tensor], seen: set[int] | None = None
) -> None:
    """Every tensor of a module tree by its dotted name; each module is visited once (a pickle's
    memo can name one module at many places, which would make the walk exponential)."""
    seen = set() if seen is None else seen
    if id(rec) in seen:
        raise UnsafePickle(f"module {prefix.rstrip('.')} appears twice in the network")
    seen.add(id(rec))
    if len(seen) > MAX_MODULES or prefix.count(".") > MAX_MODULE_DEPTH:
        raise UnsafePickle("the network's module tree is far larger than a generator's")
    for kind in ("_parameters", "_buffers"):
        for name, t in (rec.state.get(kind) or {}).items():
            if t is not None:
                if not isinstance(t, torch.Tensor):
                    raise UnsafePickle(f"{prefix}{name} is not a tensor")
                out[prefix + name] = t
    for name, child in (rec.state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise UnsafePickle(f"module {prefix}{name} is not a persistent network object")
        _flatten_record(child, f"{prefix}{name}.", out, seen)


def _find(rec: PersistentRecord, dotted: str) -> PersistentRecord:
    for part in dotted.split("."):
        rec = rec.state["_modules"][part]
    return rec


def import_ada_pickle(path: str | Path) -> tuple[dict[str, torch.Tensor], GeneratorConfig]:
    name = Path(path).name
    try:
        snapshot = load_snapshot(Path(path).read_bytes())
    except UnsafePickle as exc:
        raise CheckpointError(f"{name} was refused: {str(exc).rstrip('.')}.") from None
    G = snapshot.get("G_ema")
    if not isinstance(G, PersistentRecord) or G.class_name != "Generator":
        raise CheckpointError(f"{name} holds no G_ema generator")
    st = G.state
    try:
        if st.get("c_dim", 0) != 0:
            raise CheckpointError(f"{name} is a class-conditional generator, which is not supported")
        syn, mapping = _find(G, "synthesis"), _find(G, "mapping")
        flat: dict[str, torch.Tensor] = {}
        _flatten_record(G, "", flat)
        resolution = int(st["img_resolution"])
        channels, conv_clamp = {}, None
        for res in syn.state["block_resolutions"]:
            block = _find(syn, f"b{res}")
            if block.state.get("architecture", "skip") != "skip":
                raise CheckpointError(
                    f"{name} uses the {block.state['architecture']!r} architecture; only 'skip' is supported"
                )
            channels[int(res)] = int(flat[f"synthesis.b{res}.conv1.weight"].shape[0])
            conv_clamp = _find(block, "conv1").state.get("conv_clamp")
        fc0 = _find(mapping, "fc0")
        config = GeneratorConfig(
            resolution=resolution,
            z_dim=int(st["z_dim"]),
            w_dim=int(st["w_dim"]),
            mapping_layers=int(mapping.state["num_layers"]),
            mapping_lr_mul=float(fc0.state["bias_gain"]),
            img_channels=int(st["img_channels"]),
            channels=channels,
            conv_clamp=float(conv_clamp) if conv_clamp is not None else None,
        )
    except UnsafePickle as exc:
        raise CheckpointError(f"{name} was refused: {str(exc).rstrip('.')}.") from None
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, OverflowError) as exc:
        raise CheckpointError(
            f"{name} does not have the structure of a StyleGAN2-ADA generator ({type(exc).__name__})."
        ) from None
    state = {k: v for k, v in flat.items() if not k.endswith("resample_filter")}
    for k, f in flat.items():
        if k.endswith("resample_filter") and not _is_standard_fir(f):
            raise CheckpointError(f"{name} uses a resampling filter other than [1,3,3,1] ({k})")
    return state, config


def custom_filters(G: Generator) -> dict[str, torch.Tensor]:
    """The resampling filters that are not StyleGAN2's [1,3,3,1] (saved, and hashed into the
    model id, only then: a standard model's file and id are as they always were)."""
    return {
        name: buf.detach().cpu().float().contiguous()
        for name, buf in G.named_buffers()
        if name.endswith(FILTER_SUFFIX) and not _is_standard_fir(buf)
    }


def _is_standard_fir(f: torch.Tensor) -> bool:
    return f.shape == (4, 4) and torch.allclose(f.float(), fir_filter(), atol=1e-6)


def describe(G: Generator) -> dict:
    return {
        "model_id": G.model_id,
        "resolution": G.resolution,
        "z_dim": G.z_dim,
        "w_dim": G.w_dim,
        "num_ws": G.num_ws,
        "parameters": sum(p.numel() for p in G.parameters()),
        "provenance": getattr(G, "provenance", {}),
    }
