"""`make pretrain`'s command, end to end at smoke size: data, training, a checkpoint that loads, a report."""

import json

import pytest

from diamond_lite import pretrain


@pytest.mark.parametrize("kind", sorted(pretrain.KINDS))
def test_pretrain_smoke_writes_a_loadable_checkpoint_and_report(tmp_path, kind):
    out = tmp_path / "wm.pt"
    args = ["--profile", "smoke", "--kind", kind, "--max-steps", "3", "--minutes", "5", "--data-steps", "120",
            "--work-dir", str(tmp_path / "work"), "--out", str(out)]  # fmt: skip
    assert pretrain.main(args) == 0
    model = pretrain.KINDS[kind].load(out, game="Breakout")
    assert model.num_updates == 3
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["kind"] == kind and report["updates"] == 3 and isinstance(report["curve"], list)
    if kind == "rew_end_model":  # every held-out step is scored
        assert sum(map(sum, report["confusion_end"])) == sum(report["end"]["support"]) > 0
    else:
        assert report["mse_model"] > 0 and report["mse_copy_last"] > 0
    assert report["machine"]["torch"].startswith("2.13.0")


def test_one_term_world_model_and_evaluate_only(tmp_path, capsys):
    out = tmp_path / "one_term.pt"
    common = ["--profile", "smoke", "--data-steps", "120", "--work-dir", str(tmp_path / "work")]
    assert pretrain.main([*common, "--autoregressive-steps", "0", "--max-steps", "2", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["num_autoregressive_steps"] == 0 and (tmp_path / "work" / "Breakout" / "one_term_log.jsonl").exists()
    assert len(report["dream_mse_15_steps"]) == 15 and report["starts_15_steps"] == 4
    capsys.readouterr()
    fresh = ["--profile", "smoke", "--data-steps", "120", "--work-dir", str(tmp_path / "fresh")]
    assert pretrain.main([*fresh, "--evaluate", str(out)]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["updates"] == 2 and len(scored["dream_mse_15_steps"]) == 15
    assert not (tmp_path / "fresh" / "Breakout" / "train").exists()  # scoring collects the held-out data only
    with pytest.raises(SystemExit):
        pretrain.main([*common, "--kind", "rew_end_model", "--evaluate", str(out)])
