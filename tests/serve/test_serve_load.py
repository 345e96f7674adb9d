"""`python -m eval.load`: starts `slimformer serve` as a process of its own, loads it at two levels, stops it gracefully."""

import json

from eval.load import main


def test_load_test_reports_every_level_and_stops_the_server(onnx_dir, texts, tmp_path, capsys):
    texts_file, out = tmp_path / "texts.txt", tmp_path / "load.json"
    texts_file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert main([str(onnx_dir), "--texts", str(texts_file), "--levels", "1", "4", "--requests", "40", "--warmup", "4",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    levels = [(r["clients"], r["requests"], r["failed"], r["complete"]) for r in result["levels"]]
    assert levels == [(1, 40, 0, True), (4, 40, 0, True)]
    assert all(r["p99_ms"] >= r["p50_ms"] > 0 and r["requests_per_s"] > 0 and r["mean_batch"] >= 1 for r in result["levels"])
    assert result["server_exit_code"] == 0 and result["n_texts"] == len(texts) - 1  # the blank line is no text
    assert "0 failed requests" in capsys.readouterr().out


def test_a_missing_texts_file_is_a_clean_error(onnx_dir, tmp_path, capsys):
    assert main([str(onnx_dir), "--texts", str(tmp_path / "none.txt")]) == 2
    assert "texts file" in capsys.readouterr().err
