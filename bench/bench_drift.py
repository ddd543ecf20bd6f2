"""Drift benchmark: Sluice's chunked sketch vs exact scipy tests and peer tools, in one run.

Data: a baseline and a target window of ``SLUICE_BENCH_DRIFT_ROWS`` rows (default 1,000,000) x
(20 numeric + 5 categorical) columns written to Parquet, with drift of several sizes in some
columns (clear, borderline and none) and a 4x larger target file for the memory check.

Each method runs in a fresh subprocess that loads the Parquet files into pandas, resets the
kernel's peak-RSS counter (``/proc/self/clear_refs``) and then runs, so "peak above loaded" is
the memory the method itself needs on top of the loaded frames:

* ``sluice``: ``DriftProfile().fit(baseline)``, the target sketched in 65,536-row chunks,
  ``compare``; the window part alone (sketch + compare) is timed too, since the profile is fitted
  once at registration.
* ``scipy``: exact ``ks_2samp(method="asymp")`` per numeric column and ``chi2_contingency``
  per categorical column on the raw values.
* ``sluice-parquet``: ``sketch_parquet`` of the target file without loading it, for the 1x and
  4x files (memory independent of row count).
* peers (Evidently DataDriftPreset, NannyML univariate, alibi-detect KSDrift + ChiSquareDrift)
  in ``bench/.peers-venv`` via ``bench/peers_drift.py``; a missing or failing peer is skipped
  with its reason, never failing the benchmark. ``SLUICE_BENCH_DRIFT_PEERS`` (comma-separated,
  default all; ``none`` for none) picks them: Evidently alone takes minutes.

Decisions are compared per column at the per-test level of the default policy (alpha 0.05
Bonferroni-corrected over 2 tests x 25 features = 0.001): test p-value below it, for Sluice and
scipy alike. Lines are JSON (``bench/_common.emit``); progress goes to stderr.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._common import emit, log

BENCH = "drift"
ROOT = Path(__file__).resolve().parents[1]
PEERS_PYTHON = ROOT / "bench" / ".peers-venv" / "bin" / "python"
PEERS_SCRIPT = ROOT / "bench" / "peers_drift.py"
PEERS = ("evidently", "nannyml", "alibi-detect")
NUMERIC = [f"n{i:02d}" for i in range(20)]
CATEGORICAL = [f"k{i}" for i in range(5)]
CHUNK_ROWS = 65_536
PEER_TIMEOUT_S = 1_800

# Target drift per column: (kind, shift in baseline standard deviations, scale factor).
NUMERIC_KINDS = ("normal", "lognormal", "uniform", "poisson", "zero_inflated")
DRIFT = {
    "n00": (0.10, 1.0),  # clear mean shift
    "n01": (0.02, 1.0),  # small shift of a skewed column, clear at 1M rows
    "n02": (0.0, 1.02),  # 2% wider uniform
    "n03": (0.02, 1.0),  # integer-valued (ties)
    "n05": (0.007, 1.0),  # borderline at 1M rows: KS D close to the critical value
    "n10": (0.0, 1.05),  # wider normal
    "n13": (0.003, 1.0),  # below what 1M rows can detect at this level
}
SD = {
    "normal": 1.0,
    "lognormal": math.sqrt((math.e - 1) * math.e),
    "uniform": math.sqrt(1 / 12),
    "poisson": math.sqrt(5.0),
    "zero_inflated": 1.6,
}


def _numeric(name: str, n: int, rng: np.random.Generator, drifted: bool) -> np.ndarray:
    j = int(name[1:])
    kind = NUMERIC_KINDS[j % len(NUMERIC_KINDS)]
    shift, scale = DRIFT.get(name, (0.0, 1.0)) if drifted else (0.0, 1.0)
    if kind == "normal":
        values = rng.normal(size=n) * scale
    elif kind == "lognormal":
        values = rng.lognormal(size=n) * scale
    elif kind == "uniform":
        values = (rng.random(size=n) - 0.5) * scale + 0.5
    elif kind == "poisson":
        values = rng.poisson(5.0 + shift * SD["poisson"], size=n).astype(np.float64)
        shift = 0.0
    else:
        values = np.where(rng.random(size=n) < 0.3, 0.0, rng.gamma(2.0, size=n)) * scale
    values += shift * SD[kind]
    if j % 4 == 3:
        values[rng.random(size=n) < 0.02] = np.nan
    return values


def _categorical(name: str, n: int, rng: np.random.Generator, drifted: bool) -> np.ndarray:
    if name == "k0":
        labels, p = np.array(list("abcde"), dtype=object), [0.4, 0.25, 0.15, 0.12, 0.08]
    elif name == "k1":  # share of "a" 0.30 -> 0.32 in the target
        labels = np.array(list("abcde"), dtype=object)
        p = [0.32, 0.23, 0.2, 0.15, 0.1] if drifted else [0.3, 0.25, 0.2, 0.15, 0.1]
    elif name == "k2":  # 50 categories, long tail
        labels = np.array([f"c{i:02d}" for i in range(50)], dtype=object)
        w = 1.0 / np.arange(1, 51) ** 1.2
        p = w / w.sum()
    elif name == "k3":  # 0.5% unseen categories in the target
        labels = np.array([f"t{i}" for i in range(10)] + ["new1", "new2"], dtype=object)
        p = [0.1] * 10 + [0.0, 0.0]
        if drifted:
            p = [0.0995] * 10 + [0.0025, 0.0025]
    else:  # three categories with 1% missing
        labels, p = np.array(["x", "y", "z"], dtype=object), [0.5, 0.3, 0.2]
    values = labels[rng.choice(len(labels), p=np.asarray(p) / np.sum(p), size=n)]
    if name == "k4":
        values[rng.random(size=n) < 0.01] = None
    return values


def write_parquet(path: Path, rows: int, *, seed: int, drifted: bool, batch: int = 500_000) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer = None
    try:
        for start in range(0, rows, batch):
            n = min(batch, rows - start)
            columns = {c: _numeric(c, n, rng, drifted) for c in NUMERIC}
            columns.update(
                {c: pa.array(_categorical(c, n, rng, drifted), type=pa.string()) for c in CATEGORICAL}
            )
            table = pa.table(columns)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=131_072)
    finally:
        if writer is not None:
            writer.close()


# ------------------------------------------------------------------------------------------
# Workers (run in subprocesses so each has its own peak-RSS counter)
# ------------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in kB; peak RSS from getrusage without /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, kB on Linux


def _reset_peak() -> int:
    """Reset the kernel's peak-RSS counter to the current RSS (Linux >= 4.0) and return it.

    Without ``/proc/self/clear_refs`` the peak cannot be reset, so "peak above loaded" becomes
    "peak above the peak so far" (a lower bound).
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
        return _status_kb("VmRSS")
    except OSError:
        return _status_kb("VmHWM")


def _alpha_per_test() -> float:
    from sluice.monitoring.policy import DriftPolicy

    return DriftPolicy().alpha_per_test(2 * (len(NUMERIC) + len(CATEGORICAL)))


def worker_sluice(baseline: str, target: str) -> dict:
    import pandas as pd

    from sluice.monitoring.profile import DriftProfile

    ref, cur = pd.read_parquet(baseline), pd.read_parquet(target)
    loaded = _reset_peak()
    start = time.perf_counter()
    profile = DriftProfile().fit(ref)
    fitted = time.perf_counter()
    sketch = profile.sketch(cur.iloc[i : i + CHUNK_ROWS] for i in range(0, len(cur), CHUNK_ROWS))
    report = profile.compare(sketch)
    end = time.perf_counter()
    Path(baseline).with_suffix(".profile.json").write_text(json.dumps(profile.to_dict()))
    return {
        "seconds": end - start,
        "window_seconds": end - fitted,
        "peak_above_loaded_mb": (_status_kb("VmHWM") - loaded) / 1024,
        "loaded_rss_mb": loaded / 1024,
        "decisions": {
            f.name: f.p_value is not None and f.p_value < report.alpha_per_test for f in report.features
        },
        "profile_json_kb": len(json.dumps(profile.to_dict())) / 1024,
    }


def worker_scipy(baseline: str, target: str) -> dict:
    import pandas as pd
    from scipy import stats

    ref, cur = pd.read_parquet(baseline), pd.read_parquet(target)
    alpha = _alpha_per_test()
    loaded = _reset_peak()
    start = time.perf_counter()
    decisions = {}
    for column in NUMERIC:
        a = ref[column].to_numpy(dtype=np.float64)
        b = cur[column].to_numpy(dtype=np.float64)
        result = stats.ks_2samp(a[np.isfinite(a)], b[np.isfinite(b)], method="asymp")
        decisions[column] = bool(result.pvalue < alpha)
    for column in CATEGORICAL:
        table = pd.concat([ref[column].value_counts(), cur[column].value_counts()], axis=1).fillna(0)
        result = stats.chi2_contingency(table.to_numpy().T, correction=False)
        decisions[column] = bool(result.pvalue < alpha)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_above_loaded_mb": (_status_kb("VmHWM") - loaded) / 1024,
        "loaded_rss_mb": loaded / 1024,
        "decisions": decisions,
    }


def worker_sluice_parquet(profile_json: str, target: str) -> dict:
    from sluice.monitoring.profile import DriftProfile

    profile = DriftProfile.from_dict(json.loads(Path(profile_json).read_text()))
    loaded = _reset_peak()
    start = time.perf_counter()
    sketch = profile.sketch_parquet(target, batch_rows=CHUNK_ROWS)
    profile.compare(sketch)
    return {
        "seconds": time.perf_counter() - start,
        "peak_above_loaded_mb": (_status_kb("VmHWM") - loaded) / 1024,
        "rss_before_mb": loaded / 1024,
        "rows": sketch.n_rows,
    }


WORKERS = {"sluice": worker_sluice, "scipy": worker_scipy, "sluice-parquet": worker_sluice_parquet}


def _run_worker(name: str, baseline: Path, target: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "lambdas")]))
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_drift", "--worker", name, str(baseline), str(target)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_peer(peer: str, baseline: Path, target: Path, alpha: float) -> dict:
    if not PEERS_PYTHON.exists():
        return {
            "peer": peer,
            "ok": False,
            "reason": f"{PEERS_PYTHON} not found (see bench/requirements-peers.txt)",
        }
    command = [
        str(PEERS_PYTHON),
        str(PEERS_SCRIPT),
        peer,
        "--baseline",
        str(baseline),
        "--target",
        str(target),
        "--numeric",
        ",".join(NUMERIC),
        "--categorical",
        ",".join(CATEGORICAL),
        "--alpha",
        repr(alpha),
    ]
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=PEER_TIMEOUT_S,
            env=dict(os.environ, NML_DISABLE_USAGE_LOGGING="1"),
        )
    except subprocess.TimeoutExpired:
        return {"peer": peer, "ok": False, "reason": f"timed out after {PEER_TIMEOUT_S} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"peer": peer, "ok": False, "reason": f"exit {done.returncode}: {tail[:300]}"}
    return json.loads(lines[-1])


def _agreement(decisions: dict, exact: dict) -> float:
    return sum(decisions[c] == exact[c] for c in exact) / len(exact)


def agreement_sweep(
    *, baseline_rows: int = 200_000, window_rows: int = 20_000, windows: int = 40, seed: int = 4
) -> dict:
    """Decisions of the sketch vs exact scipy on many windows whose drift is drawn around the
    detection boundary (numeric shifts up to 0.08 sd, categorical mixtures up to 5%), where a
    binning error would flip decisions most easily."""
    import pandas as pd
    from scipy import stats

    from sluice.monitoring.profile import DriftProfile

    rng = np.random.default_rng(seed)
    ref = pd.DataFrame({c: _numeric(c, baseline_rows, rng, False) for c in NUMERIC})
    for c in CATEGORICAL:
        ref[c] = _categorical(c, baseline_rows, rng, False)
    profile = DriftProfile().fit(ref)
    sorted_ref = {c: np.sort(ref[c].to_numpy()[np.isfinite(ref[c].to_numpy())]) for c in NUMERIC}
    ref_counts = {c: ref[c].value_counts() for c in CATEGORICAL}
    alpha = _alpha_per_test()
    agree = total = drifted = 0
    for _ in range(windows):
        cur = pd.DataFrame({c: _numeric(c, window_rows, rng, False) for c in NUMERIC})
        for c in NUMERIC:
            kind = NUMERIC_KINDS[int(c[1:]) % len(NUMERIC_KINDS)]
            cur[c] += rng.uniform(0, 0.08) * SD[kind]
        for c in CATEGORICAL:
            values = _categorical(c, window_rows, rng, False)
            other = _categorical(c, window_rows, rng, True)[rng.permutation(window_rows)]
            mix = rng.random(window_rows) < rng.uniform(0, 0.05)
            values[mix] = other[mix][::-1]  # a differently ordered draw: another distribution
            cur[c] = values
        report = profile.compare(cur)
        for f in report.features:
            if f.kind == "numeric":
                b = cur[f.name].to_numpy()
                p = stats.ks_2samp(sorted_ref[f.name], b[np.isfinite(b)], method="asymp").pvalue
            else:
                table = pd.concat([ref_counts[f.name], cur[f.name].value_counts()], axis=1).fillna(0)
                p = stats.chi2_contingency(table.to_numpy().T, correction=False).pvalue
            exact = p < alpha
            ours = f.p_value is not None and f.p_value < alpha
            if exact != ours and os.environ.get("SLUICE_BENCH_DEBUG"):
                log(f"disagree {f.name} {f.kind} exact_p={p:.3g} ours_p={f.p_value:.3g} D={f.statistic}")
            agree += int(exact == ours)
            drifted += int(exact)
            total += 1
    return {"agreement": agree / total, "decisions": total, "exact_drifted": drifted}


# ------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------


def main() -> None:
    rows = int(os.environ.get("SLUICE_BENCH_DRIFT_ROWS", "1000000"))
    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-drift-"))
    try:
        _bench(rows, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _bench(rows: int, workdir: Path) -> None:
    baseline, target, target_x4 = (
        workdir / "baseline.parquet",
        workdir / "target.parquet",
        workdir / "target4.parquet",
    )
    log(
        f"drift bench: writing {rows:,} x {len(NUMERIC) + len(CATEGORICAL)} baseline/target and a {4 * rows:,}-row target"
    )
    write_parquet(baseline, rows, seed=1, drifted=False)
    write_parquet(target, rows, seed=2, drifted=True)
    write_parquet(target_x4, 4 * rows, seed=3, drifted=True)
    alpha = _alpha_per_test()
    shape = {"rows": rows, "numeric": len(NUMERIC), "categorical": len(CATEGORICAL)}

    log("drift bench: exact scipy")
    exact = _run_worker("scipy", baseline, target)
    log("drift bench: sluice sketch")
    ours = _run_worker("sluice", baseline, target)
    agreement = _agreement(ours["decisions"], exact["decisions"])
    emit(
        BENCH,
        "sluice_seconds",
        ours["seconds"],
        unit="s",
        baseline=exact["seconds"],
        baseline_name="exact scipy (ks_2samp asymp + chi2_contingency)",
        **shape,
    )
    emit(
        BENCH,
        "sluice_window_seconds",
        ours["window_seconds"],
        unit="s",
        baseline=exact["seconds"],
        baseline_name="exact scipy",
        note="sketch + compare, profile fitted beforehand",
        **shape,
    )
    emit(
        BENCH,
        "sluice_peak_above_loaded_mb",
        ours["peak_above_loaded_mb"],
        unit="MB",
        baseline=exact["peak_above_loaded_mb"],
        baseline_name="exact scipy",
        loaded_rss_mb=round(ours["loaded_rss_mb"], 1),
        **shape,
    )
    emit(
        BENCH,
        "decision_agreement_with_exact",
        agreement,
        unit="fraction",
        target=">= 0.99",
        columns=len(exact["decisions"]),
        alpha_per_test=alpha,
        disagreements=sorted(c for c in exact["decisions"] if ours["decisions"][c] != exact["decisions"][c]),
        drifted_exact=sorted(c for c, v in exact["decisions"].items() if v),
    )
    emit(BENCH, "profile_json_kb", ours["profile_json_kb"], unit="kB", **shape)

    log("drift bench: decision agreement sweep around the detection boundary")
    sweep = agreement_sweep()
    emit(
        BENCH,
        "decision_agreement_sweep",
        sweep["agreement"],
        unit="fraction",
        target=">= 0.99",
        decisions=sweep["decisions"],
        exact_drifted=sweep["exact_drifted"],
        note="40 windows of 20,000 rows vs a 200,000-row baseline, drift drawn around the boundary",
    )

    log("drift bench: sketch_parquet at 1x and 4x rows")
    profile_json = baseline.with_suffix(".profile.json")  # written by the "sluice" worker
    one = _run_worker("sluice-parquet", profile_json, target)
    four = _run_worker("sluice-parquet", profile_json, target_x4)
    emit(
        BENCH,
        "sketch_parquet_peak_above_loaded_mb_4x_rows",
        four["peak_above_loaded_mb"],
        unit="MB",
        baseline=one["peak_above_loaded_mb"],
        baseline_name=f"same at {one['rows']:,} rows",
        target="ratio ~1 (memory independent of row count)",
        rows=four["rows"],
    )
    emit(
        BENCH,
        "sketch_parquet_seconds_4x_rows",
        four["seconds"],
        unit="s",
        baseline=one["seconds"],
        baseline_name=f"same at {one['rows']:,} rows",
        rows=four["rows"],
    )

    results = {}
    wanted = os.environ.get("SLUICE_BENCH_DRIFT_PEERS", ",".join(PEERS))
    for peer in PEERS:
        if peer not in wanted.split(","):
            emit(BENCH, f"peer_{peer}_skipped", 0.0, unit="none", reason="not in SLUICE_BENCH_DRIFT_PEERS")
            continue
        log(f"drift bench: peer {peer}")
        result = _run_peer(peer, baseline, target, alpha)
        if not result.get("ok"):
            emit(BENCH, f"peer_{peer}_skipped", 0.0, unit="none", reason=result.get("reason"))
            continue
        results[peer] = result
        emit(
            BENCH,
            f"sluice_seconds_vs_{peer}",
            ours["seconds"],
            unit="s",
            baseline=result["seconds"],
            baseline_name=f"{peer} {result['version']}",
            target="<= 0.02" if peer == "evidently" else None,
            peer_method=result["method"],
            peer_agreement_with_exact=_agreement(result["decisions"], exact["decisions"]),
            **shape,
        )
        emit(
            BENCH,
            f"sluice_peak_above_loaded_mb_vs_{peer}",
            ours["peak_above_loaded_mb"],
            unit="MB",
            baseline=result["peak_above_loaded_mb"],
            baseline_name=f"{peer} {result['version']}",
            target="<= 0.1" if peer == "evidently" else None,
            **shape,
        )
    if results:
        fastest = min(results, key=lambda p: results[p]["seconds"])
        emit(
            BENCH,
            "sluice_seconds_vs_fastest_peer",
            ours["seconds"],
            unit="s",
            baseline=results[fastest]["seconds"],
            baseline_name=f"{fastest} {results[fastest]['version']}",
            target="<= 0.25",
            **shape,
        )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        print(json.dumps(WORKERS[sys.argv[2]](sys.argv[3], sys.argv[4])), flush=True)
    else:
        main()
