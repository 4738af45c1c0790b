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
