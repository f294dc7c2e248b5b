"""Session modules: open one artifact and run it, with numpy and that runtime only.

Each `<runtime>_session.py` here imports nothing from edgepack, so a device (the emulated board,
later a real one) or a bundle runs the very file the host runs in-process: copied beside the
worker program (edgepack/devices/worker.py), loaded by path. Their common API:

    open_session(artifact: str, threads: int) -> Session
    Session.run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]   # ONNX names in, ONNX order out
    Session.inputs() -> list[dict]                                    # {"name", "shape", "dtype"}
    SessionError                                                      # a one-line, user-fixable failure

The files are named `<runtime>_session.py`, not `<runtime>.py`: copied into a folder on sys.path,
`onnxruntime.py` would shadow the runtime it imports.
"""

from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def session_file(module: str) -> Path:
    """The file a device copies for session module `module` (e.g. "tflite_session")."""
    return FOLDER / f"{module}.py"
