"""Peer drift tools for ``bench/bench_drift.py``, run inside ``bench/.peers-venv``.

The peers cannot share Sluice's venv (see ``bench/requirements-peers.txt``), so the benchmark
starts this script with the peers' interpreter, once per peer::

    bench/.peers-venv/bin/python bench/peers_drift.py evidently --baseline b.parquet \
        --target t.parquet --numeric n0,n1 --categorical k0 --alpha 0.001

It loads both Parquet files into pandas, resets the process's peak-RSS counter, runs the peer,
and prints one JSON line: ``{"peer", "ok", "version", "seconds", "peak_above_loaded_mb",
"loaded_rss_mb", "decisions": {column: bool}, "method"}``, or ``{"peer", "ok": false,
"reason"}`` when the peer cannot be imported or fails. Only the standard library is imported at
module level, so the script starts under any interpreter.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # nannyml sends usage data otherwise


def _status_kb(field: str) -> int:
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


def reset_peak() -> int:
    """Reset VmHWM to the current RSS (Linux >= 4.0) and return the current RSS in kB.

    Without ``/proc/self/clear_refs`` this returns the peak so far (a lower-bound measurement).
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
        return _status_kb("VmRSS")
    except OSError:
        return _status_kb("VmHWM")


def peak_kb() -> int:
    return _status_kb("VmHWM")


def _ks_p(d: float, n: int, m: int) -> float:
    from scipy import stats

    return float(stats.kstwobign.sf(math.sqrt(n * m / (n + m)) * d))


def run_evidently(ref, cur, numeric, categorical, alpha):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    decisions, methods = {}, set()
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config.get("type", "").endswith("ValueDrift"):
            method, threshold, value = config["method"], config["threshold"], metric["value"]
            methods.add(method)
            decisions[config["column"]] = value < threshold if "p_value" in method else value >= threshold
    return decisions, "DataDriftPreset defaults: " + ", ".join(sorted(methods))


def run_nannyml(ref, cur, numeric, categorical, alpha):
    import nannyml as nml

    calculator = nml.UnivariateDriftCalculator(
        column_names=numeric + categorical,
        treat_as_categorical=categorical,
        continuous_methods=["kolmogorov_smirnov"],
        categorical_methods=["chi2"],
        chunk_number=1,
    )
    calculator.fit(ref)
    result = calculator.calculate(cur).filter(period="analysis").to_df()
    # With one chunk NannyML's alert thresholds (from the spread of reference chunks) are
    # degenerate, so decide from its statistics with the asymptotic p-value at ``alpha``.
    from scipy import stats

    decisions = {}
    for column in numeric:
        d = float(result[(column, "kolmogorov_smirnov", "value")].iloc[0])
        decisions[column] = _ks_p(d, len(ref), len(cur)) < alpha
    for column in categorical:
        statistic = float(result[(column, "chi2", "value")].iloc[0])
        dof = max(1, len(set(ref[column].dropna().unique()) | set(cur[column].dropna().unique())) - 1)
        decisions[column] = float(stats.chi2.sf(statistic, dof)) < alpha
    return decisions, "UnivariateDriftCalculator kolmogorov_smirnov + chi2, one chunk"


def run_alibi(ref, cur, numeric, categorical, alpha):
    import numpy as np
    from alibi_detect.cd import ChiSquareDrift, KSDrift

    decisions = {}
    ks = KSDrift(ref[numeric].to_numpy(dtype=np.float32), p_val=alpha, correction="bonferroni")
    p_values = ks.predict(cur[numeric].to_numpy(dtype=np.float32), return_p_val=True)["data"]["p_val"]
    decisions.update({c: float(p) < alpha for c, p in zip(numeric, p_values, strict=True)})
    if categorical:
        codes_ref, codes_cur = [], []
        for column in categorical:
            categories = sorted(set(ref[column].astype(str)) | set(cur[column].astype(str)))
            lookup = {c: i for i, c in enumerate(categories)}
            codes_ref.append(ref[column].astype(str).map(lookup).to_numpy())
            codes_cur.append(cur[column].astype(str).map(lookup).to_numpy())
        chi = ChiSquareDrift(np.column_stack(codes_ref), p_val=alpha, correction="bonferroni")
        p_values = chi.predict(np.column_stack(codes_cur), return_p_val=True)["data"]["p_val"]
        decisions.update({c: float(p) < alpha for c, p in zip(categorical, p_values, strict=True)})
    return decisions, "KSDrift (numeric) + ChiSquareDrift (categorical codes)"


PEERS = {
    "evidently": ("evidently", run_evidently),
    "nannyml": ("nannyml", run_nannyml),
    "alibi-detect": ("alibi_detect", run_alibi),
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--numeric", default="")
    parser.add_argument("--categorical", default="")
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args(argv)
    numeric = [c for c in args.numeric.split(",") if c]
    categorical = [c for c in args.categorical.split(",") if c]
    module, run = PEERS[args.peer]
    try:
        import importlib
        import importlib.metadata

        importlib.import_module(module)
        version = importlib.metadata.version(args.peer)
        import pandas as pd

        ref = pd.read_parquet(args.baseline, columns=numeric + categorical)
        cur = pd.read_parquet(args.target, columns=numeric + categorical)
        loaded = reset_peak()
        start = time.perf_counter()
        decisions, method = run(ref, cur, numeric, categorical, args.alpha)
        seconds = time.perf_counter() - start
        peak = peak_kb()
    except Exception as error:  # a peer that does not install or run is skipped with its reason
        reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        print(json.dumps({"peer": args.peer, "ok": False, "reason": reason}), flush=True)
        traceback.print_exc(file=sys.stderr)
        return 0
    print(
        json.dumps(
            {
                "peer": args.peer,
                "ok": True,
                "version": version,
                "seconds": seconds,
                "peak_above_loaded_mb": (peak - loaded) / 1024,
                "loaded_rss_mb": loaded / 1024,
                "decisions": {c: bool(v) for c, v in decisions.items()},
                "method": method,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
