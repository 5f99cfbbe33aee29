"""pages/common.py's choices that every page shares, on the bundled checkpoints' own records."""
import math
from dataclasses import replace
from types import SimpleNamespace
from pathlib import Path

import altair as alt
import pandas as pd

import pages.common as common
from pages.common import (NET_COLORS, PLAIN_SHADES, _shade, colour_key, default_pair, log_ticks, markdown_code,
                          model_colors, model_legend, percent, span)
from resnet_core import list_checkpoints, zoo
from resnet_core.checkpoint import CheckpointInfo

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


def test_legends_name_the_checkpoints_the_sidebar_names():
    """The 15-epoch 56-layer pair alone, one run per model: the sidebar and the text say plain56-15ep and
    resnet56-15ep, and so does the legend (not plain56 and resnet56, the 64k folders' names)."""
    rows = pd.DataFrame(dict(checkpoint=["plain56-15ep", "resnet56-15ep"], model=["plain56", "resnet56"], depth=[56, 56],
                             net=["plain", "residual"], iterations=[5_850, 5_850]))
    assert colour_key(rows) == "checkpoint"
    legend = model_legend(rows).to_dict()
    assert legend["field"] == "checkpoint" and legend["scale"]["domain"] == ["plain56-15ep", "resnet56-15ep"]


def brightness(colour: str) -> int:
    return sum(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def test_each_kind_of_net_has_a_ladder_of_its_own():
    """plain56 beside resnet56 alone was the palest orange (#f0a061), as if the shallowest of a shared ladder, and
    dark brown beside plain20: its shade now depends on the plain nets drawn only, and alone of its kind it is the
    kind's own orange, as on Predict (not the dark brown and navy that made 'blues below oranges' hard to see)."""
    rows = pd.DataFrame(dict(checkpoint=["plain20", "plain56", "resnet20", "resnet56"], depth=[20, 56, 20, 56],
                             model=["plain20", "plain56", "resnet20", "resnet56"], net=["plain", "plain", "residual",
                                                                                        "residual"]))
    pair = model_colors(rows.iloc[[1, 3]])
    assert pair.domain == ["plain56", "resnet56"]
    assert pair.range == NET_COLORS.range  # Predict's orange and blue, not the light end nor a dark brown and navy
    assert brightness(PLAIN_SHADES[-1]) < brightness(pair.range[0]) < brightness(PLAIN_SHADES[0])
    # a ladder runs light, the kind's own, dark: its middle a clear orange, not the brown halfway from light to dark
    assert [_shade(PLAIN_SHADES, t) for t in (0, 0.5, 1)] == list(PLAIN_SHADES)
    assert _shade(PLAIN_SHADES, 0.75) == "#b23e08"
    plain_only = model_colors(rows.iloc[[0, 1]])
    assert model_colors(rows).range[:2] == plain_only.range  # the residual nets beside them change nothing
    assert brightness(plain_only.range[0]) > brightness(plain_only.range[1])  # darker = deeper
    assert brightness(plain_only.range[0]) < brightness(PLAIN_SHADES[0])  # the light end still reads on a projector


def test_log_ticks_are_powers_of_ten_and_few():
    """Vega's own ticks on the landscape's log axes read 0.001, 0.009, 0.08, 0.7, 6, 50 and crowded the colour bar
    (0.5 0.9 2 3 4 5 7 9 20 40 70): the domain's ends and the powers of ten between, thinned past eight; 1-3-10
    steps where no power of ten lies between the ends."""
    assert log_ticks([0.0012, 50]) == [0.0012, 0.01, 0.1, 1, 10, 50]
    assert log_ticks([0.0012, 50], nice=True) == [0.001, 0.01, 0.1, 1, 10, 100]  # a log axis's nice domain
    assert log_ticks([10, 100]) == [10, 30, 100] and log_ticks([0.5, 5]) == [0.5, 1, 5]
    wide = log_ticks([0.001, 1e15])
    assert wide == [1e-3, 1, 1e3, 1e6, 1e9, 1e12, 1e15] and len(log_ticks([0.0025, 6e9])) <= 8
    assert log_ticks([2.2, 2.5]) == [2.2, 2.5] and log_ticks([3, 3]) == [3]  # no round value between: the ends
    assert log_ticks(alt.Undefined) is alt.Undefined  # Vega-Lite's own
    assert log_ticks(None) is alt.Undefined and log_ticks([0, 1]) is alt.Undefined


def test_log_scales_label_both_ends_and_drop_a_power_of_ten_too_near_one():
    """The review's cases: the gradient heatmap's colour bar (0.0078 to 0.43) read 0.01 ... 0.3, the landscape's
    (0.0025 to 1,283) left its bottom unlabelled, the Layer responses axis stopped at 5 under data reaching 9.2.
    Each end is labelled now, to two figures; a power of ten whose label would touch an end's is left out (0.01
    beside 0.0078 on a 170 px bar, 1 beside 1.1), the end never; labels across a bar count their width."""
    from pages.common import LABEL_PX, log_label

    assert log_ticks([0.0078, 0.43], length=170, across=True) == [0.0078, 0.1, 0.43]
    assert log_ticks([0.0025, 1283.2], length=300, across=True) == [0.0025, 0.1, 1, 10, 100, 1283.2]
    assert log_ticks([0.47, 9.2], length=220) == [0.47, 1, 9.2]
    assert log_ticks([0.16, 1.1], length=220) == [0.16, 0.3, 1.1]  # 1 would touch 1.1: 0.3 between instead
    assert log_ticks([0.17, 40], length=300) == [0.17, 1, 10, 40]
    for domain, length, across in (([0.0078, 0.43], 170, True), ([0.0025, 1283.2], 300, True),
                                   ([0.16, 1.1], 220, False), ([1e-6, 2e15], 300, False), ([0.012, 0.9], 170, True)):
        ticks = log_ticks(domain, length=length, across=across)
        assert ticks[0] == domain[0] and ticks[-1] == domain[1] and len(ticks) <= 8, (domain, ticks)
        px = [math.log10(v / domain[0]) / math.log10(domain[1] / domain[0]) * length for v in ticks]
        for (a, left), (b, right) in zip(zip(ticks, px), zip(ticks[1:], px[1:])):  # never closer than a label
            assert right - left >= (0.5 * 0.6 * LABEL_PX * len(log_label(a)) if across else LABEL_PX), (domain, ticks)
    # as LOG_LABELS writes them: two significant figures, powers of ten past 10,000 in superscript
    assert [log_label(v) for v in (0.0077612, 0.43, 1283.2, 1, 30, 0.001, 2.237e15, 1e5, 7.96e-6)] == [
        "0.0078", "0.43", "1,300", "1", "30", "0.001", "2.2 × 10¹⁵", "10⁵", "8 × 10⁻⁶"]
    assert "',.2~r'" in common.LOG_LABELS and "'⁻'" in common.LOG_LABELS


def test_every_chart_is_styled_for_a_projector_layered_and_concatenated_alike():
    """Tick labels, axis titles and legends were 10-12 px in Vega's grey on every page: one configuration, on the
    top-level chart (the only place Vega-Lite takes one), makes them dark and 13-14 px, for a layer, a vertical
    concatenation and a facet alike; a chart sized on purpose keeps its size."""
    from pages.common import INK, OWN_SIZE, styled

    base = alt.Chart(pd.DataFrame(dict(x=[1, 2], y=[3, 4]))).mark_line().encode(x="x:Q", y="y:Q")
    for chart in (alt.layer(base, base.mark_point()), alt.vconcat(base, base), base.facet(column="x:N"), base):
        config = styled(chart, legends_below=True).to_dict()["config"]
        assert config["axis"]["labelFontSize"] == 13 and config["axis"]["titleFontSize"] == 14
        assert config["axis"]["labelColor"] == config["axis"]["titleColor"] == INK == "#31333F"
        assert config["legend"]["labelFontSize"] == 13 and config["legend"]["orient"] == "bottom"
        assert config["title"]["fontSize"] == 16 and config["legend"]["labelLimit"] == 0
    assert styled(base.properties(autosize=OWN_SIZE)).to_dict()["autosize"] == {"type": "pad"}


def test_linear_axes_end_at_a_labelled_value_above_the_tallest_bar():
    """Architecture's bars (2.36 million multiply-adds) ran past the axis' last label, 2.0."""
    from pages.common import linear_ticks

    assert linear_ticks(2.36) == [0, 0.5, 1, 1.5, 2, 2.5] and linear_ticks(125.6) == [0, 50, 100, 150]
    assert linear_ticks(2.0) == [0, 0.5, 1, 1.5, 2] and linear_ticks(0.44)[-1] == 0.5


def test_tables_write_powers_of_ten_as_the_axes_do():
    from pages.common import raised

    assert raised("plain110: 1.6 × 10^6 (layer 3), 2.24 × 10^-15") == "plain110: 1.6 × 10⁶ (layer 3), 2.24 × 10⁻¹⁵"
    assert raised("0.0154 (layer 5) to 0.0638, 4.13x") == "0.0154 (layer 5) to 0.0638, 4.13x"


def test_the_compute_chart_says_what_it_shows_from_the_table():
    """Architecture's sentence over 'Where the compute goes', computed from the layer table it draws."""
    said = zoo.compute_summary(zoo.architecture_frame("resnet56"))
    assert said == ("52 of the 56 weight layers do the same work, 2.36 million multiply-adds each, 97.8 % of the 125 "
                    "million in all: each stage halves the feature map as it doubles the filters; the fc layer does "
                    "640 (too few to see).")
    table = pd.DataFrame(dict(layer=["a", "b", "c", "fc"], type=["Conv2d"] * 3 + ["Linear"],
                              macs=[1_000_000, 3_000_000, 2_000_000, 500_000]))
    assert zoo.compute_summary(table) == ("The costliest of the 4 weight layers, b, does 3 million multiply-adds, "
                                          "46.2 % of the 6.5 million in all; the fc layer does 500,000.")


def test_shared_axis_domains_span_the_finite_values_only():
    """An inf in a Vega-Lite spec breaks both panels that share it: domains leave inf and NaN out, and leave the
    domain to Vega-Lite where no value is finite."""
    data = pd.DataFrame(dict(low=[0.5, float("nan"), 2.0, float("-inf")], high=[1.0, float("inf"), 3.0, None]))
    assert span(data, "low") == [0.5, 2.0] and span(data, "low", "high") == [0.5, 3.0]
    assert span(pd.DataFrame(dict(low=[float("inf"), None])), "low") is alt.Undefined


def test_probabilities_never_round_to_a_certainty():
    assert [percent(p) for p in (0.5, 0.99949, 0.9995, 0.99996, 1.0)] == ["50.0\u00a0%", "99.9\u00a0%", ">99.9\u00a0%",
                                                                           ">99.9\u00a0%", ">99.9\u00a0%"]
    assert [percent(p, "") for p in (0.0005, 0.0004999, 4e-5, 0.0)] == ["0.1", "<0.1", "<0.1", "<0.1"]


def test_layer_responses_compare_a_depth_only_between_nets_trained_equally_long():
    """The Layer responses page's sentence under Fig. 7: a plain/residual pair of one length is compared layer by layer;
    a depth whose two nets trained for different lengths is named as not compared, never compared anyway."""
    def net(name, kind, depth, iterations, std):
        return [dict(checkpoint=name, net=kind, depth=depth, iterations=iterations, index=i, std=s)
                for i, s in enumerate(std)]

    rows = (net("plain20", "plain", 20, 64000, [2.0, 3.0, 4.0]) + net("resnet20", "residual", 20, 64000, [1.0, 1.0, 5.0])
            + net("plain56", "plain", 56, 64000, [2.0, 2.0]) + net("resnet56-15ep", "residual", 56, 5865, [1.0, 1.0]))
    said = zoo.responses_measured(pd.DataFrame(rows))
    assert said.startswith("Measured here: 20 layers: residual smaller at 2 of 3 layers (median std 1.00 vs plain 3.00)")
    assert "56 layers: plain56 and resnet56-15ep trained for different lengths, so they are not compared" in said
    assert said.count("not compared") == 1 and "56 layers: residual" not in said and said.endswith(".")
    assert zoo.responses_measured(pd.DataFrame(net("plain20", "plain", 20, 64000, [2.0]))) == ""  # no residual net: nothing to say


def test_a_recorded_command_cannot_break_out_of_its_code_block(monkeypatch, tmp_path):
    """config.json's command is anyone's text: with a ``` and a blank line of its own it closed the page's code
    block and showed the rest as markdown (bold, an image fetched from a tracker). Shown on one line, between
    fences longer than any run of backticks in it; an ordinary command as before."""
    command = "python train.py --note '```\n\n**bold** ![x](http://example.invalid/t.png)\n```'"
    info = CheckpointInfo("resnet20", tmp_path, {"model": "resnet20", "command": command}, {}, {})  # no weights
    shown = []
    monkeypatch.setattr(common, "st", SimpleNamespace(info=shown.append))
    assert common.load_model(info) is None
    again = " ".join(info.regenerate_command().splitlines())
    assert "```" in again and "````" not in again
    assert f"Regenerate them with\n\n````\n{again}\n````\n\n" in shown[0]
    assert markdown_code("python train.py", block=True) == "\n\n```\npython train.py\n```\n\n"
    # a code span, as Layer responses shows the command: closed only by a run of backticks as long as its own
    assert markdown_code("a `b` ``c``\n\nd") == "``` a `b` ``c``  d ```" and markdown_code("x") == "` x `"
