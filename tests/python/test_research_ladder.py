"""The research ladder file: the default one resolves at every rung, and a bad size_tolerance is an error."""

import pytest

from nanowhale.config import resolve
from nanowhale.research.ladder import DEFAULT_LADDER, load_ladder, parse_budget


def test_every_rung_of_the_default_ladder_resolves():
    ladder = load_ladder(DEFAULT_LADDER)
    assert [r.name for r in ladder][:2] == ["tiny", "small"]
    for r in ladder:
        cfg = resolve(r.preset, [], r.overrides())
        assert r.size_tolerance == 0.1 and parse_budget(r.budget_cpu)[1] > 0
        assert cfg.train.batch_tokens % (cfg.train.micro_batch * cfg.model["seq_len"]) == 0


@pytest.mark.parametrize("value", ['"0.1"', "0", "1.5", "true"])
def test_size_tolerance_must_be_a_fraction(tmp_path, value):
    f = tmp_path / "ladder.toml"
    f.write_text(f'size_tolerance = {value}\n[[rung]]\nname = "a"\npreset = "tiny"\nbudget_cpu = "tokens:1e6"\n'
                 'budget_gpu = "time:60"\neval_tokens = 512\n')
    with pytest.raises(ValueError, match="size_tolerance: expected a fraction in \\(0, 1\\)"):
        load_ladder(f)
