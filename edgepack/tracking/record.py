"""What a run holds: the typed reports (and the events that point at them) as MLflow runs.

A parent run per command; one nested run per stage (teacher, distill, prune, quantize, emit)
and per artifact a compile built. Each nested run takes the previous model as its input
(`LoggedModelInput`) and logs its own as its output, so the chain
teacher -> student -> pruned -> INT8 -> artifact is a walk over MLflow's own records. Metrics
about an artifact are logged with its `model_id`: per-target figures attach to the model they
measure. Everything is read from the reports on disk, the same ones a user reads.
"""

from __future__ import annotations

import hashlib
import json
import re
import time

from edgepack.fsutil import slug

LEVEL = "edgepack.level"  # parent | stage | artifact
COMMAND = "edgepack.command"
PARENT = "mlflow.parentRunId"
PARAM_MAX = 500


def _ms() -> int:
    return int(time.time() * 1000)


def metric_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", text)


def artifact_metrics(a) -> dict[str, float]:
    """The figures of one artifact (report.schema.Artifact), devices included."""
    out = {"size_bytes": a.size_bytes}
    for key in ("accuracy", "accuracy_drop", "load_ms", "throughput_per_s"):
        if getattr(a, key, None) is not None:
            out[key] = getattr(a, key)
    if a.fidelity is not None:
        out["fidelity_cosine"] = a.fidelity.cosine
        if a.fidelity.agreement is not None:
            out["fidelity_agreement"] = a.fidelity.agreement
    if a.parity is not None and a.parity.cosine_min is not None:
        out["parity_cosine_min"] = a.parity.cosine_min
    if a.latency_ms is not None:
        out.update({f"{q}_ms": getattr(a.latency_ms, q) for q in ("p50", "p90", "p99", "mean")})
    for d in a.devices or []:
        prefix = f"device.{metric_name(d.device)}."
        out.update({f"{prefix}{q}_ms": getattr(d.latency_ms, q) for q in ("p50", "p90", "p99")})
        if d.cold_load_ms is not None:
            out[prefix + "cold_load_ms"] = d.cold_load_ms
    return {k: float(v) for k, v in out.items() if v is not None and v == v}


def compile_params(r) -> dict[str, str]:
    """Parameters of a compile report: target and profile hash, precision, budget, pruning,
    calibration and quantizer candidate, benchmark settings and library versions."""
    shipped, q = r.shipped(), r.quantization
    profile = json.dumps(r.target.profile or {}, sort_keys=True, default=str)
    p = {"target": r.target.name, "target_profile_sha256": hashlib.sha256(profile.encode()).hexdigest()[:16],
         "source": r.source.name, "source_sha256": r.source.sha256, "precision_requested": r.precision_requested,
         "precision": shipped.precision, "backend": shipped.backend,
         "backends": ",".join(a.backend for a in r.artifacts), "edgepack_version": r.edgepack_version,
         "runs": shipped.runs, "warmup": shipped.warmup, "threads": shipped.threads}
    if q is not None:
        p.update({"max_drop": q.max_drop, "max_drop_relative": q.relative, "quantizer": q.by, "int8_format": q.format,
                  "int8_scheme": q.scheme, "calibration": q.calibration, "int8_decision": q.decision})
    if r.accuracy is not None:
        p.update({"metric": r.accuracy.metric, "eval_samples": r.accuracy.samples})
    if r.pruning is not None:
        p.update({"prune_ratio": r.pruning.ratio, "prune_mode": r.pruning.mode,
                  "prune_channel_multiple": r.pruning.channel_multiple})
    if r.sparsity is not None:
        p["sparsity"] = r.sparsity.sparsity
    p.update({f"lib.{k}": v for k, v in r.environment.libraries.items()})
    return clean(p)


def clean(params: dict) -> dict[str, str]:
    out = {}
    for k, v in params.items():
        if v is None:
            continue
        text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
        out[metric_name(k)] = text[:PARAM_MAX]
    return out


def flat(settings: dict, prefix: str = "") -> dict:
    """Stage settings as flat params: {"finetune": {"lr": 1e-3}} -> {"finetune.lr": 1e-3}."""
    out = {}
    for k, v in (settings or {}).items():
        if isinstance(v, dict) and v:
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def row_metrics(row: dict, prefix: str = "") -> dict[str, float]:
    keys = ("accuracy", "drop", "params", "macs", "size_bytes", "p50_ms", "p99_ms", "seconds")
    return {f"{prefix}{'accuracy_drop' if k == 'drop' else k}": float(row[k]) for k in keys
            if isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool)}


def dataset_inputs(datasets: list[dict]):
    """The events' dataset records as MLflow DatasetInputs (name, digest, source, context)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    out = []
    for d in datasets or []:
        ds = Dataset(name=str(d["name"]), digest=str(d["digest"])[:36], source_type="local",
                     source=json.dumps({"uri": str(d.get("source", ""))}))
        tags = [InputTag("mlflow.data.context", str(d["context"])), InputTag("edgepack.sha256", str(d["digest"]))]
        out.append(DatasetInput(ds, tags))
    return out


def registry_name(model: str, target: str) -> str:
    return slug(f"{model}-{target}")[:200]
