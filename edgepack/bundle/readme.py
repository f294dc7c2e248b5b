"""The README.md every bundle carries: what is in it and how to run it, from its manifest."""

from __future__ import annotations

from edgepack.bundle.manifest import Manifest

LITERT = "com.google.ai.edge.litert:litert:1.4.1"  # LiteRT's Interpreter API (org.tensorflow.lite)
_KT_TYPES = {"float32": ("Float", 4), "int8": ("Byte", 1), "uint8": ("Byte", 1)}
_SHIFTS = {"RGB": "16, 8, 0", "BGR": "0, 8, 16"}


def _tensor_rows(tensors) -> list[str]:
    rows = []
    for t in tensors:
        own = t.artifact_tensor
        extra = ""
        if own is not None:
            q = f", int scale {own.quant.scale:.6g} zero point {own.quant.zero_point}" if own.quant else ""
            extra = f"; artifact tensor `{own.name}` {own.shape} {own.dtype} {own.layout or ''}{q}"
        rows.append(f"| `{t.name}` | {t.shape} | {t.dtype} | {t.layout or '-'}{extra} |")
    return rows


def readme(m: Manifest) -> str:
    rt = m.runtime
    minimum = f">={rt.minimum_version}" if rt.minimum_version else ""
    pre = m.preprocessing
    lines = [
        f"# {m.name}",
        "",
        f"{m.model} compiled by edgepack {m.lineage.edgepack_version} for target `{m.target.name}`: "
        f"{m.backend} artifact `{m.artifact.path}` ({m.artifact.precision}, {m.artifact.size_bytes} bytes), "
        f"for {'any CPU architecture' if rt.arch == 'any' else rt.arch + ' only'}.",
        "",
        "## Run it",
        "",
        "Needs Python 3 with numpy and the runtime, nothing of edgepack:",
        "",
        "```",
        f"pip install numpy '{rt.package}{minimum}'   # tested with {rt.package} {rt.tested_version}",
        "python runner/run.py              # replay the golden vectors: prints the max difference per output",
        "python runner/run.py --bench 50   # time 50 inferences (--threads N, --warmup N)",
        "```",
        "",
        "`run.py` runs `runner/worker.py`, the program edgepack's devices run, with the session module "
        f"`{rt.session_module}` (how edgepack opens and feeds {m.backend}); read it to embed the artifact in "
        "your own code. Exit code 7: outputs outside tolerance.",
        "",
        "With edgepack installed, `edgepack verify BUNDLE [--device NAME]` checks the files' hashes, the device "
        "(architecture, runtime version) and replays the golden vectors there.",
        "",
        "## Inputs and outputs",
        "",
        "ONNX names and order; layout as the runner takes them.",
        "",
        "| name | shape | dtype | layout |",
        "|---|---|---|---|",
        *_tensor_rows(m.inputs),
        *_tensor_rows(m.outputs),
        "",
        "## Preprocessing",
        "",
        (f"`{pre.spec}`: {pre.note}" if pre.recorded else pre.note),
        "",
        *_android(m),
        "## Files",
        "",
        "- `manifest.json`: every file's sha256 and size, I/O, target profile, runtime versions, ops, lineage, "
        "measurements (with where each was measured), golden vectors and tolerances "
        "(schema: `manifest.schema.json`)",
        "- `model/`: the artifact and the files its runtime loads beside it",
        "- `golden/`: inputs and the outputs the artifact computed for them "
        f"({m.golden.computed_on})",
        "- `runner/`: run.py, worker.py and the session module",
        "- `report.md`: the compile report",
        "",
    ]
    return "\n".join(lines)


def _floats(values) -> str:
    return ", ".join(f"{float(v):.6g}f" for v in values)


def _put(tensor, value: str) -> str:
    """Kotlin that writes the float `value` into the input buffer as `tensor` takes it."""
    q = tensor.quantization
    if tensor.dtype == "float32" or q is None:
        return f"buf.putFloat({value})"
    lo, hi = (-128, 127) if tensor.dtype == "int8" else (0, 255)
    zp = f"{'+' if q.zero_point >= 0 else '-'} {abs(q.zero_point)}"
    return f"buf.put(Math.round({value} / {q.scale:.8g}f {zp}).coerceIn({lo}, {hi}).toByte())"


def _fill(m: Manifest) -> list[str]:
    """The input-filling body: from a Bitmap with the manifest's normalization, or (none recorded)
    from values the app already prepared."""
    a = m.android
    t = a.inputs[0]
    pre = a.preprocess
    if pre is None or len(t.shape) != 4 or t.shape[-1] not in (1, 3):
        return ["// no image preprocessing recorded: `values` are the input's values, NHWC order, already prepared",
                "fun toInput(values: FloatArray): ByteBuffer {",
                f"    val buf = ByteBuffer.allocateDirect({_size(t)}).order(ByteOrder.nativeOrder())",
                f"    for (v in values) {_put(t, 'v')}", "    return buf.rewind() as ByteBuffer", "}"]
    n = pre.normalization
    h, w, c = t.shape[1], t.shape[2], t.shape[3]
    crop = "center-crop to the aspect ratio first, then " if pre.resize == "center_crop" else ""
    if c == 1:
        channel = ["        val gray = 0.299f * (p shr 16 and 0xFF) + 0.587f * (p shr 8 and 0xFF) + 0.114f * (p and 0xFF)",
                   f"        {_put(t, '(gray - MEAN[0]) / STD[0]')}"]
    else:
        channel = ["        for (c in 0 until 3) { val v = (p shr SHIFT[c] and 0xFF).toFloat()",
                   f"            {_put(t, '(v - MEAN[c]) / STD[c]')} }}"]
    return [f"// {n.formula} on 0..255 pixels, channels {n.color} (manifest.json: android.preprocess)",
            f"val MEAN = floatArrayOf({_floats(n.mean * (c if len(n.mean) == 1 else 1))})",
            f"val STD = floatArrayOf({_floats(n.std * (c if len(n.std) == 1 else 1))})",
            *([f"val SHIFT = intArrayOf({_SHIFTS.get(n.color, _SHIFTS['RGB'])})  // ARGB bit offsets"] if c == 3 else []),
            "fun toInput(bitmap: Bitmap): ByteBuffer {",
            f"    // {crop}scale to {w}x{h}",
            f"    val px = IntArray({h * w}).also {{ Bitmap.createScaledBitmap(bitmap, {w}, {h}, true)"
            f".getPixels(it, 0, {w}, 0, 0, {w}, {h}) }}",
            f"    val buf = ByteBuffer.allocateDirect({_size(t)}).order(ByteOrder.nativeOrder())",
            "    for (p in px) {", *channel, "    }", "    return buf.rewind() as ByteBuffer", "}"]


def _size(t) -> int:
    count = 1
    for d in t.shape:
        count *= max(int(d), 1)
    return count * _KT_TYPES.get(t.dtype, ("Float", 4))[1]


def _read(t) -> list[str]:
    """Kotlin running the interpreter and giving the first output as floats (dequantized when integer)."""
    n = _size(t) // _KT_TYPES.get(t.dtype, ("Float", 4))[1]
    q = t.quantization
    if t.dtype == "float32" or q is None:
        back = f"    return FloatArray({n}).also {{ out.asFloatBuffer().get(it) }}"
    else:
        mask = " and 0xFF" if t.dtype == "uint8" else ""
        zp = f"{'-' if q.zero_point >= 0 else '+'} {abs(q.zero_point)}"
        back = f"    return FloatArray({n}) {{ ((out.get(it).toInt(){mask}) {zp}) * {q.scale:.8g}f }}"
    return ["fun infer(interpreter: Interpreter, input: ByteBuffer): FloatArray {",
            f"    val out = ByteBuffer.allocateDirect({_size(t)}).order(ByteOrder.nativeOrder())",
            "    interpreter.run(input, out)", "    out.rewind()", back, "}"]


def _android(m: Manifest) -> list[str]:
    """The README's Android section (TFLite bundles): a Kotlin snippet with LiteRT's Interpreter."""
    if m.android is None:
        return []
    a = m.android
    t, o = a.inputs[0], a.outputs[0]
    model = m.artifact.path.rsplit("/", 1)[-1]
    return [
        "## Android (Kotlin, LiteRT)",
        "",
        f"Copy `{m.artifact.path}` into the app's `assets/` (stored uncompressed: "
        f'`androidResources {{ noCompress += "tflite" }}`) and add `implementation("{LITERT}")`. '
        f"Input `{t.name}` {t.shape} {t.dtype}, output `{o.name}` {o.shape} {o.dtype}, as the Interpreter "
        "sees them (NHWC); the manifest's `android` section has every tensor"
        f"{', the labels' if a.labels else ''}{' and the normalization' if a.preprocess else ''}. "
        f"{a.metadata[:1].upper()}{a.metadata[1:]}.",
        "",
        "```kotlin",
        "import android.content.Context", "import android.graphics.Bitmap",
        "import org.tensorflow.lite.Interpreter", "import java.io.FileInputStream", "import java.nio.ByteBuffer",
        "import java.nio.ByteOrder", "import java.nio.channels.FileChannel",
        "",
        "fun interpreter(context: Context, threads: Int = 4): Interpreter {",
        f'    val model = context.assets.openFd("{model}").use {{ fd ->',
        "        FileInputStream(fd.fileDescriptor).channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, "
        "fd.declaredLength)",
        "    }",
        "    return Interpreter(model, Interpreter.Options().setNumThreads(threads))",
        "}",
        "",
        *_fill(m),
        "",
        *_read(o),
        "```",
        "",
    ]
