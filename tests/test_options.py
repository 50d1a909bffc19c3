"""`comma_list` (jobs/options.py): every comma-separated CLI option reads its items and words its refusals one way."""

import pytest
import typer

from jobs.options import Number, OneOf, OrNone, WholeNumber, comma_list

COUNTS = WholeNumber(1)
SIZES = WholeNumber(100, "catalogue sizes", " for recall@100")
SEEDS = WholeNumber(0, "seeds")
LAMBDAS = Number()
WEIGHTS = Number(0.0, 1.0, low_open=False)
THRESHOLDS = OrNone(Number(0.0, 1.0))
ENGINES = OneOf(("local", "ray"), "engine")
NAMES = OneOf(("flat", "hnsw"))


@pytest.mark.parametrize("item,value,expected", [
    (COUNTS, "1,8, 32,", [1, 8, 32]),  # blanks between commas skipped, order kept
    (COUNTS, "2,1", [2, 1]),
    (COUNTS, "1_000,1e4", [1000, 10_000]),
    (SIZES, "10000,1e6,1.5e4", [10_000, 1_000_000, 15_000]),
    (SEEDS, "0", [0]),
    (LAMBDAS, "100, 0.5,1e3", [100.0, 0.5, 1000.0]),
    (WEIGHTS, "0,0.1,1", [0.0, 0.1, 1.0]),
    (THRESHOLDS, "NONE,0.95,1", [None, 0.95, 1.0]),
    (ENGINES, "ray, local", ["ray", "local"]),
])
def test_comma_list_reads_good_values(item, value, expected):
    assert comma_list(value, "--opt", item) == expected


@pytest.mark.parametrize("item,value,message", [
    (COUNTS, "", "none given; expected comma-separated whole numbers ≥ 1 (got '')"),
    (COUNTS, " , ,", "none given; expected comma-separated whole numbers ≥ 1 (got ' , ,')"),
    (COUNTS, "1,x", "'x' is not a whole number; expected comma-separated whole numbers ≥ 1 (got '1,x')"),
    (COUNTS, "1.5,inf,nan", "'1.5' is not a whole number, 'inf' is not a whole number, 'nan' is not a whole number; "
                            "expected comma-separated whole numbers ≥ 1 (got '1.5,inf,nan')"),
    (COUNTS, "0,-3", "'0' is not ≥ 1, '-3' is not ≥ 1; expected comma-separated whole numbers ≥ 1 (got '0,-3')"),
    (SIZES, "1000,99", "'99' is not ≥ 100; expected comma-separated catalogue sizes ≥ 100 for recall@100 "
                       "(got '1000,99')"),
    (SEEDS, "-1", "'-1' is not ≥ 0; expected comma-separated seeds ≥ 0 (got '-1')"),
    (LAMBDAS, "x", "'x' is not a number; expected comma-separated finite numbers > 0 (got 'x')"),
    (LAMBDAS, "100,inf", "'inf' is not a finite number; expected comma-separated finite numbers > 0 (got '100,inf')"),
    (LAMBDAS, "nan", "'nan' is not a finite number; expected comma-separated finite numbers > 0 (got 'nan')"),
    (LAMBDAS, "0", "'0' is not > 0; expected comma-separated finite numbers > 0 (got '0')"),
    (WEIGHTS, "-0.1,1.5", "'-0.1' is not in [0, 1], '1.5' is not in [0, 1]; expected comma-separated numbers in "
                          "[0, 1] (got '-0.1,1.5')"),
    (THRESHOLDS, "0,nope", "'0' is not in (0, 1], 'nope' is not a number; expected comma-separated numbers in (0, 1], "
                           "or none (got '0,nope')"),
    (ENGINES, "local,spark", "unknown engine 'spark'; choose from local, ray (got 'local,spark')"),
    (ENGINES, ",", "none given; choose from local, ray (got ',')"),
    (NAMES, "Flat,ivf", "unknown 'Flat', unknown 'ivf'; choose from flat, hnsw (got 'Flat,ivf')"),
    # a repeat was kept: `--seeds 0,0` fitted seed 0 twice, `--concurrency 8,8` measured twice
    (SEEDS, "0,0", "'0' is repeated; expected comma-separated seeds ≥ 0 (got '0,0')"),
    (COUNTS, "10,10,20,10", "'10' is repeated; expected comma-separated whole numbers ≥ 1 (got '10,10,20,10')"),
    (COUNTS, "1_000,x,1e3", "'x' is not a whole number, '1e3' repeats '1_000'; expected comma-separated whole numbers "
                            "≥ 1 (got '1_000,x,1e3')"),
    (LAMBDAS, "0.5,.5", "'.5' repeats '0.5'; expected comma-separated finite numbers > 0 (got '0.5,.5')"),
    (THRESHOLDS, "none,0.95,NONE", "'NONE' repeats 'none'; expected comma-separated numbers in (0, 1], or none "
                                   "(got 'none,0.95,NONE')"),
    (ENGINES, "ray, ray", "'ray' is repeated; choose from local, ray (got 'ray, ray')"),
])
def test_comma_list_refuses_naming_the_option_each_bad_item_and_what_it_takes(item, value, message):
    with pytest.raises(typer.BadParameter) as refused:
        comma_list(value, "--opt", item)
    assert refused.value.param_hint == "--opt" and refused.value.message == message


def test_a_list_of_runs_may_repeat_an_entry():
    """`bench latency --concurrency 1,32,32,32` measures c = 32 three times (the README's commands do): each entry is
    a run, so repeats are allowed there, as written, and still refused in a list of settings."""
    assert comma_list("1,32,32,1_000,1e3", "--concurrency", COUNTS, repeats=True) == [1, 32, 32, 1000, 1000]
    with pytest.raises(typer.BadParameter, match="'x' is not a whole number"):
        comma_list("32,x,32", "--concurrency", COUNTS, repeats=True)
    from typer.testing import CliRunner

    from jobs.cli import app

    result = CliRunner().invoke(app, ["bench", "latency", "--bundle", "/nonexistent", "--concurrency", "32,32"])
    assert result.exit_code == 2 and "no bundle here" in result.output  # past the option: the missing bundle stops it
