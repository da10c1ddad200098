"""The WSD benchmark's smoke mode (tests/benchmarks/bench_wsd.py --smoke): every measurement on
two synthetic ladders with a known loss law, and both tiny recipes planned; seconds."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_wsd_smoke(capsys):
    spec = importlib.util.spec_from_file_location("bench_wsd", ROOT / "tests" / "benchmarks" / "bench_wsd.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.smoke()
    text = bench.report(res)
    # the synthetic branches end on the law the cosine runs follow: the same final losses
    assert res["final_val_loss_summary"]["max_abs_pct"] < 1e-9 and len(res["final_val_loss"]) == 16
    assert 0.6 < res["plan_flops"]["wsd"] / res["plan_flops"]["cosine"] <= 0.65
    assert 0.6 < res["trained_flops"]["ratio"] < 0.7  # 10 + 8 x 0.2 units of 18 per size
    for layout in ("cosine", "wsd (step 2: all rows)", "wsd (step 2: decay rows)"):
        assert res["backtest"][layout]["mean"]["mae_points"] < 3.0, (layout, text)
    assert set(res["target"]) == {"cosine/hellaswag", "wsd/hellaswag"}
    assert "in-ladder backtests" in text and "held-out target" in text
