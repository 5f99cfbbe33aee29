"""pages/common.py's choices that every page shares, on the bundled checkpoints' own records."""
from dataclasses import replace
from pathlib import Path

import altair as alt
import pandas as pd

from pages.common import colour_key, default_pair, model_colors, model_legend, percent, span
from resnet_core import list_checkpoints

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


def test_pages_open_on_the_56_layer_pair_else_the_deepest_pair():
    """The paper's own example of degradation, not plain-110 at chance; without a 56-layer pair, the deepest pair."""
    infos, _ = list_checkpoints(CHECKPOINTS)
    assert default_pair(infos) == ("plain56", "resnet56")
    without_56 = [i for i in infos if i.config["model"] not in ("plain56", "resnet56")]  # both lengths
    assert default_pair(without_56) == ("plain110", "resnet110")
    assert default_pair([i for i in infos if i.name in ("plain20", "resnet32")]) == ("plain20", "resnet32")
    assert default_pair([]) == (None, None)


def test_where_a_depth_has_runs_of_two_lengths_pages_open_on_the_longer_equal_pair():
    infos, _ = list_checkpoints(CHECKPOINTS)
    bundled = {i.name: i for i in infos}

    def long(name: str, folder: str | None = None):  # the same run, as if trained for the paper's 64k iterations
        info = bundled[name]
        return replace(info, name=folder or f"{name}-64k",
                       config={**info.config, "recipe": {**info.config["recipe"], "iterations": 64_000}})

    # as bundled: the paper-recipe pair named after its models, the 15-epoch one beside it as plain56-15ep, resnet56-15ep
    assert {bundled[n].config["recipe"]["iterations"] for n in ("plain56", "resnet56")} == {64_000}
    assert default_pair(infos) == ("plain56", "resnet56")
    without_long = [i for i in infos if i.name not in ("plain56", "resnet56")]
    assert default_pair(without_long) == ("plain56-15ep", "resnet56-15ep")
    # the longer pair wins whatever its folders are called, not the one named after its models
    assert default_pair(without_long + [long("plain56-15ep", "p-long"), long("resnet56-15ep", "r-long")]) == ("p-long", "r-long")
    # a long residual net without a long plain one: the short pair, trained equally long
    assert default_pair(without_long + [bundled["resnet56"]]) == ("plain56-15ep", "resnet56-15ep")
    assert default_pair([bundled["plain20"], long("resnet32")]) == ("plain20", "resnet32-64k")


def test_two_runs_of_one_model_get_colours_of_their_own():
    """resnet20 (64k iterations) beside resnet20-15ep on one chart: coloured and named by checkpoint, the shorter
    run lighter; with one checkpoint per model, by model as before."""
    rows = pd.DataFrame(dict(checkpoint=["plain20", "resnet20", "resnet20-15ep", "resnet56"],
                             model=["plain20", "resnet20", "resnet20", "resnet56"], depth=[20, 20, 20, 56],
                             net=["plain", "residual", "residual", "residual"], iterations=[64_000, 64_000, 5_850, 5_850]))
    assert colour_key(rows) == "checkpoint" and colour_key(rows.iloc[[0, 1, 3]]) == "model"
    assert colour_key(rows.drop(columns="checkpoint")) == "model"  # fresh nets at initialisation
    legend = model_legend(rows).to_dict()
    assert legend["field"] == "checkpoint" and legend["title"] == "checkpoint"
    scale = model_colors(rows, "checkpoint")
    assert scale.domain == ["plain20", "resnet20-15ep", "resnet20", "resnet56"]
    light, dark = scale.range[1:3]
    assert light != dark and sum(int(light[i:i + 2], 16) for i in (1, 3, 5)) > sum(int(dark[i:i + 2], 16) for i in (1, 3, 5))


def test_shared_axis_domains_span_the_finite_values_only():
    """An inf in a Vega-Lite spec breaks both panels that share it: domains leave inf and NaN out, and leave the
    domain to Vega-Lite where no value is finite."""
    data = pd.DataFrame(dict(low=[0.5, float("nan"), 2.0, float("-inf")], high=[1.0, float("inf"), 3.0, None]))
    assert span(data, "low") == [0.5, 2.0] and span(data, "low", "high") == [0.5, 3.0]
    assert span(pd.DataFrame(dict(low=[float("inf"), None])), "low") is alt.Undefined


def test_probabilities_never_round_to_a_certainty():
    assert [percent(p) for p in (0.5, 0.99949, 0.9995, 0.99996, 1.0)] == ["50.0 %", "99.9 %", ">99.9 %", ">99.9 %",
                                                                           ">99.9 %"]
    assert [percent(p, "") for p in (0.0005, 0.0004999, 4e-5, 0.0)] == ["0.1", "<0.1", "<0.1", "<0.1"]
